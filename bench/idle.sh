#!/usr/bin/env bash
# Idle connections: resident memory a WebSocket costs on one replica.
#
#   bench/idle.sh            # embedded mode (SQLite, in-process broker)
#   MODE=scaled bench/idle.sh   # Postgres + Redis
#
# windi-testkit (bench/kit.sh) starts one windi (limits off, a pprof
# listener for /debug/freeosmemory; scaled: a fresh database and a Redis key
# prefix of its own, dropped and deleted at the end); this script samples
# its process_resident_memory_bytes and windi_ws_connections from /metrics
# every 200 ms while windi-load opens CONNS idle connections (over USERS
# users) and holds them, then prints the resident memory just before the
# first connection, at the plateau, and the growth per connection, plus one
# JSON line.
#
# Environment: CONNS [10000], USERS [2], HOLD seconds [15], MODE
# embedded|scaled, PORT (the server's port [a free one]), PGURL (Postgres
# admin URL), BIN (a prebuilt windi [built from this tree]), WINDI_* for
# the server (limits are off; WINDI_LOG_LEVEL defaults to warn).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
USERS=${USERS:-2}
HOLD=${HOLD:-15}
PORT=${PORT:-}
MODE=${MODE:-embedded}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
# Tokens outlive the run: windi-load does not refresh them.
export JWT_TTL=${JWT_TTL:-2h}
# shellcheck source=bench/kit.sh
. bench/kit.sh

work=$(mktemp -d -t windi-idle.XXXXXX)
sampler=
cleanup() {
	local rc=$?
	[ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
	kit_down
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${BIN:-}" ]; then
	go build -o "$work/windi" ./cmd/windi
	BIN=$work/windi
fi
go build -o "$work/windi-load" ./cmd/windi-load
kit_build "$work"
flags=(-bin "$BIN" -pprof)
[ -z "$PORT" ] || flags+=(-port "$PORT")
case "$MODE" in
embedded) flags+=(-embedded) ;;
scaled) ;;
*) echo "mode: embedded or scaled, not $MODE" >&2; exit 2 ;;
esac
kit_up idle "$work" "${flags[@]}"
URL=$WINDI_URL PPROF=$WINDI_PPROF_URLS

sample() {
	while true; do
		# Garbage (password hashing during setup allocates ~19 MiB a user)
		# must not count: hand freed memory back to the OS before reading.
		curl -fsS "$PPROF/debug/freeosmemory" >/dev/null 2>&1 || true
		m=$(curl -fsS "$URL/metrics" 2>/dev/null) || true
		rss=$(awk '/^process_resident_memory_bytes /{print $2}' <<<"$m")
		conns=$(awk '/^windi_ws_connections /{print $2}' <<<"$m")
		gor=$(awk '/^go_goroutines /{print $2}' <<<"$m")
		[ -n "$rss" ] && printf '%s %s %s\n' "${conns:-0}" "$rss" "$gor"
		sleep 0.2
	done
}
sample >"$work/samples" &
sampler=$!
"$work/windi-load" -url "$URL" -scenario idle -conns "$CONNS" -users "$USERS" -duration "${HOLD}s" -dial-concurrency 64 -setup-concurrency 8 | tail -n 1 >"$work/load.json"
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
