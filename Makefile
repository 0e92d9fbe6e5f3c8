# WinDI Chat developer targets. CI runs `make ci` (= bash .ci/run).

REDOCLY := npx --yes @redocly/cli@2.77.0

.PHONY: run build test generate lint fmt-check vet staticcheck spec-lint spec-proxy ci bench load fuzz faults soak

run:
	go run ./cmd/windi

build:
	CGO_ENABLED=0 go build -o bin/windi ./cmd/windi

test:
	CGO_ENABLED=1 go test -race -count=1 ./...

generate:
	go generate ./...

lint: fmt-check vet staticcheck spec-lint

fmt-check:
	@out=$$(git ls-files --cached --others --exclude-standard -- '*.go' ':(exclude)gen/' | xargs -r gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

staticcheck:
	go tool staticcheck ./...

spec-lint:
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(REDOCLY) lint --config redocly.yaml api/openapi.yaml

# The README's curl tour through Stoplight Prism's validating proxy in
# front of the real binary (.ci/prism pins Prism); fails on any violation.
spec-proxy:
	bash .ci/run spec_proxy

ci:
	bash .ci/run

# Go benchmarks (BenchmarkInsertMessages needs Postgres at
# WINDI_TEST_DATABASE_URL). Narrow with BENCH='FanOut1000' PKGS=./realtime/.
BENCH ?= .
PKGS ?= ./...
BENCHTIME ?= 1s
bench:
	go test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) $(PKGS)

# End-to-end load benchmark: pgbench reference, two replicas on Postgres and
# Redis, windi-load scenarios (bench/README.md; about 3 minutes).
load:
	bash bench/run.sh

# Longer fuzzing than CI's: every fuzz target for FUZZTIME, through the CI
# step (.ci/run fuzz: logs in .ci/out/fuzz-*.log), growing the corpus kept in
# GOCACHE/fuzz. Failing inputs land in <pkg>/testdata/fuzz/<target>/: fix
# the code, then commit them.
FUZZTIME ?= 60s
fuzz:
	FUZZ_TIME=$(FUZZTIME) FUZZ_KEEP_CORPUS=1 bash .ci/run fuzz

# Fault injection through nginx with real replicas (kill -9, Redis and
# Postgres restarts, rolling restart) and a 20 s soak: the CI step. It stops
# and restarts this machine's Postgres and Redis (RELIABILITY.md).
faults:
	bash .ci/run faults

# The soak alone, for SOAK_SECONDS (default 600): connection churn against
# one replica, then goroutines, open files and memory must come back.
SOAK_SECONDS ?= 600
soak:
	WINDI_FAULTS=1 WINDI_SOAK_SECONDS=$(SOAK_SECONDS) WINDI_TEST_LOGS=$(CURDIR)/.ci/out/soak \
		go test -count=1 -timeout $$(( $(SOAK_SECONDS) + 300 ))s -run '^TestSoak$$' -v ./faults/
