#!/usr/bin/env bash
# One run of a benchmark sitting: start BIN (two replicas on a fresh
# Postgres database and Redis db 13, or one embedded server), run windi-load
# against it with the given flags, print the tool's table, append
# {"name":NAME,"report":…} to $WORK/results.jsonl, stop everything.
#
#   bench/sitting.sh BIN scaled|embedded NAME [windi-load flags...]
#
# The same script runs every binary of a comparison, so an old build and a
# new one are measured in one sitting by the same load tool, e.g.:
#
#   go build -o /tmp/windi-new ./cmd/windi && go build -o "$WORK/windi-load" ./cmd/windi-load
#   bench/sitting.sh /tmp/windi-new scaled fanout100@1000 \
#     -scenario group -members 100 -devices 1 -senders 1 -open -rate 1000 -duration 15s
#
# Environment: WORK (default /tmp/windi-sitting; holds windi-load, logs and
# results.jsonl), PROF=file.prof takes an 8 s CPU profile of the first
# server during the send phase, PGURL (Postgres admin URL), and any WINDI_*
# variable for the servers (limits are off here). The servers' CPU during
# the send phase is charged by windi-load (-cpu-pids).
set -u
WORK=${WORK:-/tmp/windi-sitting}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
mkdir -p "$WORK"
cd "$WORK" || exit 1
BIN=$1 MODE=$2 NAME=$3
shift 3
PROF=${PROF:-}
[ -x ./windi-load ] || { echo "build windi-load into $WORK first (see the header)" >&2; exit 2; }
rm -rf "$WORK/d1" "$WORK/d2"
export WINDI_SEND_RATE=0 WINDI_USER_SEND_RATE=0 WINDI_LOGIN_LIMIT_IP=0 WINDI_LOGIN_LIMIT_EMAIL=0 \
	WINDI_MAX_CONNS_PER_USER=0 WINDI_REGISTER_LIMIT_IP=0 WINDI_MAX_CONNS=0 WINDI_LOG_LEVEL=${WINDI_LOG_LEVEL:-warn}
urls=() pids=()
if [ "$MODE" = scaled ]; then
	psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS windi_sitting WITH (FORCE)" >/dev/null 2>&1
	psql "$PGURL" -qX -c "CREATE DATABASE windi_sitting" >/dev/null
	redis-cli -n 13 flushdb >/dev/null
	export DATABASE_URL="${PGURL%/*}/windi_sitting?sslmode=disable" REDIS_URL=redis://127.0.0.1:6379/13
	JWT_SECRET=$(openssl rand -hex 32)
	export JWT_SECRET
	# Tokens outlive the run: windi-load does not refresh them.
	export JWT_TTL=${JWT_TTL:-2h}
	n=2
else
	unset DATABASE_URL REDIS_URL JWT_SECRET
	n=1
fi
for i in $(seq 1 "$n"); do
	port=$((18180 + i))
	WINDI_ADDR=127.0.0.1:$port WINDI_DATA_DIR=$WORK/d$i WINDI_PPROF_ADDR=127.0.0.1:$((18190 + i)) "$BIN" serve >"$WORK/server-$i.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do curl -fs "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
	urls+=("http://127.0.0.1:$port")
done
u=$(IFS=,; echo "${urls[*]}")
p=$(IFS=,; echo "${pids[*]}")
profpid=
if [ -n "$PROF" ]; then
	rm -f "$WORK/tool.log"
	(
		for _ in $(seq 300); do grep -q 'send:' "$WORK/tool.log" 2>/dev/null && break; sleep 0.3; done
		sleep 3
		curl -s "127.0.0.1:18191/debug/pprof/profile?seconds=8" >"$WORK/$PROF"
	) &
	profpid=$!
fi
./windi-load -url "$u" -cpu-pids "$p" "$@" 2>"$WORK/tool.log" >"$WORK/out.txt"
sed '$d' "$WORK/out.txt" | sed "s/^/[$NAME] /"
echo "{\"name\":\"$NAME\",\"report\":$(tail -n1 "$WORK/out.txt")}" >>"$WORK/results.jsonl"
[ -n "$profpid" ] && wait "$profpid"
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
