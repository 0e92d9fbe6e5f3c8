# shellcheck shell=bash
# The deployment of the benchmark scripts (bench/run.sh, sitting.sh,
# scaling.sh, idle.sh), sourced by them: `windi-testkit up` (package testkit,
# the harness the Go tests and .ci/run use) starts the replicas on a fresh
# database and a Redis key prefix of their own, or one embedded server, and
# on SIGTERM stops them, drops the database and deletes the keys. No script
# starts a windi, creates a database or touches Redis keys itself.
#
#   kit_build DIR              windi-testkit into DIR (unless it is there)
#   kit_up NAME DIR FLAG...    start a deployment, export its variables
#   kit_down                   end it (the caller's EXIT trap calls this)
#
# kit_up passes FLAG... to windi-testkit up (-replicas N, -embedded, -redis
# URL, -bin PATH, -pprof...) after the servers' environment of every
# benchmark (KIT_SERVER_ENV), and copies the logs into DIR at the end as
# NAME-windi-N.log. Once the deployment is ready it exports WINDI_URL,
# WINDI_REPLICA_URLS, WINDI_REPLICA_PIDS, WINDI_PPROF_URLS (-pprof) and
# WINDI_TEST_JWT_SECRET[_FILE] (cmd/windi-testkit's doc comment). Postgres
# is $PGURL (an admin URL; sslmode=disable added when it names none).

KIT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT='' KIT_PID='' KIT_ENV_FILE=''

# kit_build DIR: build ./cmd/windi-testkit into DIR unless an executable is
# there already (scripts given a work directory reuse it, as they do
# windi-load).
kit_build() {
	KIT=$1/windi-testkit
	[ -x "$KIT" ] && return 0
	echo "== building windi-testkit" >&2
	(cd "$KIT_ROOT" && CGO_ENABLED=0 go build -o "$KIT" ./cmd/windi-testkit)
}

# kit_server_env: KIT_SERVER_ENV, the -env flags every benchmark server
# gets. windi-testkit gives a replica none of the caller's WINDI_*, JWT_*,
# DATABASE_URL or REDIS_URL, so the caller's WINDI_* settings (and JWT_TTL)
# are passed on here, except the ones the deployment sets itself; then the
# limits, off whatever the caller says (the load tool sends, registers and
# connects from one IP as fast as it can); then WINDI_LOG_LEVEL, warn
# unless the caller sets it (info would log every request).
kit_server_env() {
	local k
	KIT_SERVER_ENV=()
	for k in $(compgen -e); do
		case "$k" in
		WINDI_TEST_* | WINDI_TESTKIT_DIR | WINDI_URL | WINDI_REPLICA_URLS | WINDI_REPLICA_PIDS | WINDI_PPROF_URLS | \
			WINDI_ADDR | WINDI_DATA_DIR | WINDI_PPROF_ADDR | WINDI_REDIS_PREFIX | WINDI_LOG_LEVEL) ;;
		WINDI_* | JWT_TTL) KIT_SERVER_ENV+=(-env "$k=${!k}") ;;
		esac
	done
	for k in WINDI_SEND_RATE WINDI_USER_SEND_RATE WINDI_LOGIN_LIMIT_IP WINDI_LOGIN_LIMIT_EMAIL \
		WINDI_REGISTER_LIMIT_IP WINDI_MAX_CONNS_PER_USER WINDI_MAX_CONNS; do
		KIT_SERVER_ENV+=(-env "$k=0")
	done
	KIT_SERVER_ENV+=(-env "WINDI_LOG_LEVEL=${WINDI_LOG_LEVEL:-warn}")
}

# kit_up NAME DIR FLAG...: `windi-testkit up -name NAME` in the background
# (its lines go to stderr); returns once its variables are exported, 1 if
# it exits first or is not ready within 180 s.
kit_up() {
	local name=$1 dir=$2 pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres} deadline=$((SECONDS + 180))
	shift 2
	[ -n "$KIT" ] || { echo "kit_up: kit_build first" >&2; return 1; }
	[[ $pgurl == *sslmode=* ]] || { [[ $pgurl == *\?* ]] && pgurl+="&sslmode=disable" || pgurl+="?sslmode=disable"; } # loopback: no TLS
	kit_server_env
	KIT_ENV_FILE=$dir/$name.env
	rm -f "$KIT_ENV_FILE"
	# A simple command, so $! is windi-testkit's own pid: the SIGTERM of
	# kit_down must reach it.
	WINDI_TEST_DATABASE_URL=$pgurl "$KIT" up -name "$name" -logs "$dir" -env-file "$KIT_ENV_FILE" \
		"${KIT_SERVER_ENV[@]}" "$@" </dev/null >&2 &
	KIT_PID=$!
	until [ -s "$KIT_ENV_FILE" ]; do
		if ! kill -0 "$KIT_PID" 2>/dev/null; then
			wait "$KIT_PID" 2>/dev/null
			KIT_PID=''
			echo "windi-testkit up ($name) exited before its deployment was ready" >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "windi-testkit up ($name): not ready within 180 s" >&2
			return 1
		fi
		sleep 0.2
	done
	set -a
	# shellcheck disable=SC1090 # written by windi-testkit up
	. "$KIT_ENV_FILE"
	set +a
}

# kit_down: SIGTERM to windi-testkit, which stops the replicas (SIGKILL
# after 20 s), drops the database, deletes the keys and copies the logs;
# returns once it has exited. Harmless when nothing runs.
kit_down() {
	[ -n "$KIT_PID" ] || return 0
	kill -TERM "$KIT_PID" 2>/dev/null || true
	wait "$KIT_PID" 2>/dev/null || true
	KIT_PID=''
	rm -f "$KIT_ENV_FILE"
}
