#!/usr/bin/env bash
# End-to-end benchmark: the pgbench reference, then two windi replicas on a
# fresh Postgres database and a Redis key prefix of their own (started and
# ended by windi-testkit, bench/kit.sh), loaded by windi-load scenarios
# (private, group 10, group 100, idle). Prints each scenario's JSON line and
# its persisted_msgs_per_s as a ratio to the pgbench tps; a summary at the
# end. Everything it starts is stopped on exit, the database dropped and the
# keys deleted.
#
#   bench/run.sh
#
# Environment (defaults in brackets):
#   PGURL          Postgres admin URL [postgres://postgres@127.0.0.1:5432/postgres]
#   REDIS_BASE     Redis server [redis://127.0.0.1:6379]; only keys under the
#                  deployment's prefix are written, and deleted at the end
#   BIN            a prebuilt windi [built from this tree]
#   DURATION       seconds per send scenario [20]
#   IDLE_DURATION  seconds the idle scenario holds [10]
#   PGBENCH_T      pgbench seconds [20]; PGBENCH_C clients [32]; PGBENCH_J threads [2]
#   PORTS          as many words as replicas, the first replica 1's port (the
#                  others get free ones) [two replicas on free ports]
#   SCENARIOS      which to run ["private group10 group100 idle"]; also
#                  fanout100 (one sender, 100 members online, open loop at
#                  each of RATES msg/s) and fanout999 (999 members, open
#                  loop at RATE999 msg/s), mixed (fanout100 at MIXRATE
#                  with 10 % of the operations edits and reactions, the
#                  final states verified) and private-mixed (private with
#                  10 % edits and reactions)
#   RATES          fanout100's rates ["200 500 1000 1500 2000 3000"]
#   RATE999        fanout999's rate [100]
#   MIXRATE        mixed's rate [1000]
#   MODE           scaled (the replicas on Postgres + Redis) or embedded
#                  (one server, SQLite, in-process broker) [scaled]
#   PGBENCH=0      skip the pgbench reference
#   LOAD_ARGS      extra windi-load flags for every scenario [""]
#   KEEP_LOGS=1    keep the work directory (server logs bench-windi-N.log)
#                  after the run
#   WINDI_*        passed on to the servers (limits are off whatever they
#                  say; WINDI_LOG_LEVEL defaults to warn), as is JWT_TTL
set -euo pipefail

cd "$(dirname "$0")/.."
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable} # loopback: no TLS
REDIS_BASE=${REDIS_BASE:-redis://127.0.0.1:6379}
DURATION=${DURATION:-20}
IDLE_DURATION=${IDLE_DURATION:-10}
PGBENCH_T=${PGBENCH_T:-20}
PGBENCH_C=${PGBENCH_C:-32}
PGBENCH_J=${PGBENCH_J:-2}
PORTS=${PORTS:-}
MODE=${MODE:-scaled}
RATES=${RATES:-"200 500 1000 1500 2000 3000"}
RATE999=${RATE999:-100}
MIXRATE=${MIXRATE:-1000}
PGBENCH=${PGBENCH:-1}
SCENARIOS=${SCENARIOS:-"private group10 group100 idle"}
LOAD_ARGS=${LOAD_ARGS:-}
# Tokens outlive the run: windi-load does not refresh them.
export JWT_TTL=${JWT_TTL:-2h}
# shellcheck source=bench/kit.sh
. bench/kit.sh

work=$(mktemp -d -t windi-bench.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	kit_down
	if [ "${KEEP_LOGS:-}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

if [ -z "${BIN:-}" ]; then
	log "building windi"
	go build -o "$work/windi" ./cmd/windi
	BIN=$work/windi
fi
log "building windi-load"
go build -o "$work/windi-load" ./cmd/windi-load
kit_build "$work"

tps=
if [ "$PGBENCH" = 1 ]; then
	log "pgbench reference (-c $PGBENCH_C -j $PGBENCH_J -T $PGBENCH_T)"
	pg_line=$(bash bench/pgbench.sh -c "$PGBENCH_C" -j "$PGBENCH_J" -T "$PGBENCH_T" | tail -n 1)
	echo "$pg_line"
	tps=$(grep -o '"pgbench_tps":[0-9.]*' <<<"$pg_line" | cut -d: -f2)
fi

# The deployment: PORTS' words are the replicas (one when embedded), its
# first word replica 1's port.
read -ra ports <<<"$PORTS"
replicas=${#ports[@]}
[ "$replicas" -gt 0 ] || replicas=2
flags=(-bin "$BIN")
[ ${#ports[@]} -gt 0 ] && flags+=(-port "${ports[0]}")
if [ "$MODE" = scaled ]; then
	log "windi-testkit: $replicas replicas, a fresh database, Redis $REDIS_BASE under a prefix of their own"
	flags+=(-replicas "$replicas" -redis "$REDIS_BASE")
else
	log "windi-testkit: embedded mode, one server, SQLite, in-process broker"
	flags+=(-embedded)
fi
kit_up bench "$work" "${flags[@]}"
url_list=$WINDI_REPLICA_URLS

summary=()
failed=0
run_load() {
	local name=$1
	shift
	log "windi-load $name: $*"
	local out rc=0
	# shellcheck disable=SC2086 # LOAD_ARGS is a list of flags
	out=$("$work/windi-load" -url "$url_list" -cpu-pids "$WINDI_REPLICA_PIDS" "$@" $LOAD_ARGS 2> >(sed "s/^/[$name] /" >&2)) || rc=$?
	# The table, then the JSON line.
	echo "$out" | sed '$d' >&2
	local line
	line=$(tail -n 1 <<<"$out")
	echo "$line"
	if [ "$rc" != 0 ]; then
		failed=1
	fi
	local mps ok ratio
	mps=$(grep -o '"persisted_msgs_per_s":[0-9.]*' <<<"$line" | cut -d: -f2 || true)
	ok=$(grep -o '"ok":[a-z]*' <<<"$line" | cut -d: -f2 || true)
	if [ -n "$mps" ] && [ -n "$tps" ]; then
		ratio=$(awk -v a="$mps" -v b="$tps" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
	else
		ratio=n/a
	fi
	if [ "$name" = idle ]; then
		summary+=("$(printf '%-10s ok=%-5s (idle: no sends) exit=%s' "$name" "${ok:-?}" "$rc")")
	else
		echo "ratio $name: persisted_msgs_per_s $mps / pgbench_tps $tps = $ratio"
		summary+=("$(printf '%-10s ok=%-5s persisted_msgs_per_s=%-8s ratio=%-6s exit=%s' "$name" "${ok:-?}" "${mps:-?}" "$ratio" "$rc")")
	fi
}

for s in $SCENARIOS; do
	case "$s" in
	private) run_load private -scenario private -chats 50 -rate 0 -window 1 -duration "${DURATION}s" ;;
	group10) run_load group10 -scenario group -members 10 -senders 10 -rate 0 -window 1 -duration "${DURATION}s" ;;
	group100) run_load group100 -scenario group -members 100 -senders 20 -rate 0 -window 1 -duration "${DURATION}s" ;;
	idle) run_load idle -scenario idle -conns 1000 -users 100 -duration "${IDLE_DURATION}s" ;;
	fanout100)
		for r in $RATES; do
			run_load "fanout100@$r" -scenario group -members 100 -devices 1 -senders 1 -open -rate "$r" -duration "${DURATION}s"
		done
		;;
	mixed) run_load "mixed@$MIXRATE" -scenario group -members 100 -devices 1 -senders 1 -open -rate "$MIXRATE" -mix 0.1 -duration "${DURATION}s" ;;
	private-mixed) run_load private-mixed -scenario private -chats 50 -rate 0 -window 1 -mix 0.1 -duration "${DURATION}s" ;;
	fanout999) run_load "fanout999@$RATE999" -scenario group -members 999 -devices 1 -senders 1 -open -rate "$RATE999" -duration "${DURATION}s" ;;
	*) echo "unknown scenario $s" >&2; failed=1 ;;
	esac
done

log "summary (pgbench_tps $tps)"
printf '%s\n' "${summary[@]}"
exit "$failed"
