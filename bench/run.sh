#!/usr/bin/env bash
# End-to-end benchmark: the pgbench reference, then two windi replicas on a
# fresh Postgres database and Redis db 14, loaded by windi-load scenarios
# (private, group 10, group 100, idle). Prints each scenario's JSON line and
# its persisted_msgs_per_s as a ratio to the pgbench tps; a summary at the
# end. Everything it starts is stopped on exit.
#
#   bench/run.sh
#
# Environment (defaults in brackets):
#   PGURL          Postgres admin URL [postgres://postgres@127.0.0.1:5432/postgres]
#   REDIS_BASE     Redis server [redis://127.0.0.1:6379]; db 14 is flushed and used
#   DURATION       seconds per send scenario [20]
#   IDLE_DURATION  seconds the idle scenario holds [10]
#   PGBENCH_T      pgbench seconds [20]; PGBENCH_C clients [32]; PGBENCH_J threads [2]
#   PORTS          the two replicas' ports ["18081 18082"]
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
#   MODE           scaled (two replicas on Postgres + Redis) or embedded
#                  (one server, SQLite, in-process broker) [scaled]
#   PGBENCH=0      skip the pgbench reference
#   LOAD_ARGS      extra windi-load flags for every scenario [""]
#   KEEP_LOGS=1    keep the work directory (server logs) after the run
set -euo pipefail

cd "$(dirname "$0")/.."
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable} # loopback: no TLS
REDIS_BASE=${REDIS_BASE:-redis://127.0.0.1:6379}
DURATION=${DURATION:-20}
IDLE_DURATION=${IDLE_DURATION:-10}
PGBENCH_T=${PGBENCH_T:-20}
PGBENCH_C=${PGBENCH_C:-32}
PGBENCH_J=${PGBENCH_J:-2}
PORTS=${PORTS:-"18081 18082"}
MODE=${MODE:-scaled}
RATES=${RATES:-"200 500 1000 1500 2000 3000"}
RATE999=${RATE999:-100}
MIXRATE=${MIXRATE:-1000}
PGBENCH=${PGBENCH:-1}
[ "$MODE" = embedded ] && PORTS=${PORTS%% *}
SCENARIOS=${SCENARIOS:-"private group10 group100 idle"}
LOAD_ARGS=${LOAD_ARGS:-}
DB=windi_bench
REDIS_URL="$REDIS_BASE/14"

base=${PGURL%%\?*}
query=""
[ "$base" != "$PGURL" ] && query="?${PGURL#*\?}"
rest=${base#*://}
if [[ $rest == */* ]]; then DATABASE_URL="${base%/*}/$DB$query"; else DATABASE_URL="$base/$DB$query"; fi

work=$(mktemp -d -t windi-bench.XXXXXX)
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	redis-cli -u "$REDIS_URL" FLUSHDB >/dev/null 2>&1 || true
	if [ "${KEEP_LOGS:-}" = 1 ]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

log "building windi and windi-load"
go build -o "$work/windi" ./cmd/windi
go build -o "$work/windi-load" ./cmd/windi-load

tps=
if [ "$PGBENCH" = 1 ]; then
	log "pgbench reference (-c $PGBENCH_C -j $PGBENCH_J -T $PGBENCH_T)"
	pg_line=$(bash bench/pgbench.sh -c "$PGBENCH_C" -j "$PGBENCH_J" -T "$PGBENCH_T" | tail -n 1)
	echo "$pg_line"
	tps=$(grep -o '"pgbench_tps":[0-9.]*' <<<"$pg_line" | cut -d: -f2)
fi

JWT_SECRET=$(openssl rand -hex 32)
export JWT_SECRET
# Tokens outlive the run: windi-load does not refresh them.
export JWT_TTL=${JWT_TTL:-2h}
if [ "$MODE" = scaled ]; then
	log "fresh database $DB, Redis db 14 flushed"
	psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	psql "$PGURL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
	redis-cli -u "$REDIS_URL" FLUSHDB >/dev/null
	export DATABASE_URL REDIS_URL
else
	log "embedded mode: one server, SQLite in $work, in-process broker"
	unset DATABASE_URL REDIS_URL
fi
# Limits off for throughput: sends per connection and per user, logins per
# IP and email (the tool registers and logs in hundreds of users from one IP).
export WINDI_SEND_RATE=0 WINDI_USER_SEND_RATE=0 WINDI_LOGIN_LIMIT_IP=0 WINDI_LOGIN_LIMIT_EMAIL=0 WINDI_REGISTER_LIMIT_IP=0
export WINDI_LOG_LEVEL=${WINDI_LOG_LEVEL:-warn}

urls=()
i=0
for port in $PORTS; do
	i=$((i + 1))
	log "starting replica $i on 127.0.0.1:$port"
	WINDI_ADDR="127.0.0.1:$port" WINDI_DATA_DIR="$work/data-$i" "$work/windi" serve >"$work/windi-$i.log" 2>&1 &
	pids+=($!)
	urls+=("http://127.0.0.1:$port")
	# Wait for readiness before the next one, so migrations run once.
	for _ in $(seq 150); do
		curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
		kill -0 "${pids[-1]}" 2>/dev/null || { tail -n 20 "$work/windi-$i.log" >&2; echo "replica $i exited" >&2; exit 1; }
		sleep 0.2
	done
	curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { tail -n 20 "$work/windi-$i.log" >&2; echo "replica $i not ready" >&2; exit 1; }
done
url_list=$(IFS=,; echo "${urls[*]}")

summary=()
failed=0
run_load() {
	local name=$1
	shift
	log "windi-load $name: $*"
	local out rc=0
	local pid_list
	pid_list=$(IFS=,; echo "${pids[*]}")
	# shellcheck disable=SC2086 # LOAD_ARGS is a list of flags
	out=$("$work/windi-load" -url "$url_list" -cpu-pids "$pid_list" "$@" $LOAD_ARGS 2> >(sed "s/^/[$name] /" >&2)) || rc=$?
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
