# WinDI Chat developer targets. CI runs `make ci` (= bash .ci/run).

REDOCLY := npx --yes @redocly/cli@2.77.0

.PHONY: run build test generate lint fmt-check vet staticcheck spec-lint ci

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

ci:
	bash .ci/run
