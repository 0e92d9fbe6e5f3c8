#!/usr/bin/env bash
# Idle connections: resident memory a WebSocket costs on one replica.
#
#   bench/idle.sh            # embedded mode (SQLite, in-process broker)
#   MODE=scaled bench/idle.sh   # Postgres + Redis
#
# Starts one windi (limits off, pprof on for /debug/freeosmemory), samples its process_resident_memory_bytes
# and windi_ws_connections from /metrics every 200 ms while windi-load opens
# CONNS idle connections (over USERS users) and holds them, then prints the
# resident memory just before the first connection, at the plateau, and the
# growth per connection, plus one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
USERS=${USERS:-2}
PPROF_PORT=${PPROF_PORT:-18091}
HOLD=${HOLD:-15}
PORT=${PORT:-18090}
MODE=${MODE:-embedded}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=windi_idle_bench

work=$(mktemp -d -t windi-idle.XXXXXX)
pid=
cleanup() {
	local rc=$?
	[ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
	[ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
	[ "$MODE" = scaled ] && psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

go build -o "$work/windi" ./cmd/windi
go build -o "$work/windi-load" ./cmd/windi-load
export WINDI_SEND_RATE=0 WINDI_USER_SEND_RATE=0 WINDI_LOGIN_LIMIT_IP=0 WINDI_LOGIN_LIMIT_EMAIL=0 WINDI_REGISTER_LIMIT_IP=0 WINDI_MAX_CONNS_PER_USER=0
export WINDI_LOG_LEVEL=warn WINDI_ADDR=127.0.0.1:$PORT WINDI_DATA_DIR=$work/data WINDI_PPROF_ADDR=127.0.0.1:$PPROF_PORT
if [ "$MODE" = scaled ]; then
	psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	psql "$PGURL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
	export DATABASE_URL="${PGURL%/*}/$DB" REDIS_URL=redis://127.0.0.1:6379/0 WINDI_REDIS_PREFIX="idle-$RANDOM:" JWT_SECRET=$(openssl rand -hex 32) JWT_TTL=${JWT_TTL:-2h}
fi
"$work/windi" >"$work/windi.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

sample() {
	while true; do
		# Garbage (password hashing during setup allocates ~19 MiB a user)
		# must not count: hand freed memory back to the OS before reading.
		curl -fsS "http://127.0.0.1:$PPROF_PORT/debug/freeosmemory" >/dev/null 2>&1 || true
		m=$(curl -fsS "http://127.0.0.1:$PORT/metrics" 2>/dev/null) || true
		rss=$(awk '/^process_resident_memory_bytes /{print $2}' <<<"$m")
		conns=$(awk '/^windi_ws_connections /{print $2}' <<<"$m")
		gor=$(awk '/^go_goroutines /{print $2}' <<<"$m")
		[ -n "$rss" ] && printf '%s %s %s\n' "${conns:-0}" "$rss" "$gor"
		sleep 0.2
	done
}
sample >"$work/samples" &
sampler=$!
"$work/windi-load" -url "http://127.0.0.1:$PORT" -scenario idle -conns "$CONNS" -users "$USERS" -duration "${HOLD}s" -dial-concurrency 64 -setup-concurrency 8 | tail -n 1 >"$work/load.json"
kill "$sampler" 2>/dev/null || true
sampler=
# Base: the last sample with no connection before they open; plateau: the
# median of the samples with every connection open.
awk -v n="$CONNS" -v mode="$MODE" '
	{ c = $1 + 0; r = $2 + 0; g = $3 + 0 }
	c == 0 && !opened { base = r; gbase = g }
	c > 0 { opened = 1 }
	c >= n { full[++k] = r; gfull = g }
	END {
		if (k == 0) { print "connections never all open" > "/dev/stderr"; exit 1 }
		asort(full); plateau = full[int((k + 1) / 2)]
		per = (plateau - base) / n
		printf "mode %s: %d idle connections; RSS before %.1f MiB, open %.1f MiB; growth %.1f KiB per connection; goroutines %d -> %d\n", mode, n, base / 1048576, plateau / 1048576, per / 1024, gbase, gfull
		printf "{\"mode\":\"%s\",\"connections\":%d,\"rss_before_bytes\":%d,\"rss_open_bytes\":%d,\"rss_per_conn_bytes\":%.0f,\"goroutines_before\":%d,\"goroutines_open\":%d}\n", mode, n, base, plateau, per, gbase, gfull
	}' "$work/samples"
cat "$work/load.json"
