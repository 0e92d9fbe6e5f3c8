#!/usr/bin/env bash
# The scaled-down runs behind SCALING.md: N replicas of windi on a fresh
# Postgres database and either the shared Redis (a random key prefix, no
# flush) or a Redis Cluster of 3 masters + 3 replicas this script starts on
# free loopback ports (bench/redis-cluster.sh), loaded by one windi-load
# run whose connections are spread over the replicas. Prints the tool's
# table and appends {"name":…,"replicas":N,"redis":…,"report":{…}} to
# $OUT (default bench/results/scaling.jsonl).
#
#   bench/scaling.sh NAME REPLICAS single|cluster [windi-load flags...]
#   bench/scaling.sh fanout-r2 2 single -scenario group -members 100 -devices 1 -senders 1 -open -rate 500 -duration 15s
#
# Environment: PGURL (Postgres admin URL), REDIS_BASE (the shared Redis,
# default redis://127.0.0.1:6379/0), OUT, WORK (binaries and logs; default
# a temp dir, removed on exit unless KEEP=1), BIN (a prebuilt windi). Limits
# are off. The servers' CPU during the send phase is charged by windi-load
# (-cpu-pids). Everything started here is stopped on exit; the shared
# Postgres and Redis are only used, never restarted or flushed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NAME=$1 N=$2 REDIS=$3
shift 3
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_BASE=${REDIS_BASE:-redis://127.0.0.1:6379/0}
OUT=${OUT:-$ROOT/bench/results/scaling.jsonl}
WORK=${WORK:-$(mktemp -d -t windi-scaling.XXXXXX)}
DB=windi_scaling_$$
PREFIX=windi-scaling-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n'):
CLUSTER_PORT='' pids=()

cleanup() {
	local rc=$? pid
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	if [ "$REDIS" = single ]; then
		redis-cli -u "$REDIS_BASE" --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_BASE" del >/dev/null || true
	fi
	if [ -n "$CLUSTER_PORT" ]; then
		REDIS_CLUSTER_PORT=$CLUSTER_PORT REDIS_CLUSTER_DIR=$WORK/cluster bash bench/redis-cluster.sh stop || true
	fi
	if [ "${KEEP:-}" != 1 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK" >&2; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${BIN:-}" ]; then
	CGO_ENABLED=0 go build -o "$WORK/windi" ./cmd/windi
	BIN=$WORK/windi
fi
[ -x "$WORK/windi-load" ] || CGO_ENABLED=0 go build -o "$WORK/windi-load" ./cmd/windi-load

case "$REDIS" in
single) REDIS_URL=$REDIS_BASE ;;
cluster)
	# A first port P with P..P+5 and the bus ports P+10000.. free; on a
	# loaded machine a node can miss the start script's 10 s: up to three
	# tries.
	REDIS_URL=
	for _ in 1 2 3; do
		CLUSTER_PORT=
		for _ in $(seq 50); do
			p=$((20000 + RANDOM % 25000)) busy=
			for q in $(seq "$p" $((p + 5))); do
				if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((q + 10000))") 2>/dev/null; then busy=1; fi
			done
			[ -z "$busy" ] && { CLUSTER_PORT=$p; break; }
		done
		[ -n "$CLUSTER_PORT" ] || { echo "no free ports for a Redis Cluster" >&2; exit 1; }
		REDIS_URL=$(REDIS_CLUSTER_PORT=$CLUSTER_PORT REDIS_CLUSTER_DIR=$WORK/cluster bash bench/redis-cluster.sh start) && break
		REDIS_CLUSTER_PORT=$CLUSTER_PORT REDIS_CLUSTER_DIR=$WORK/cluster bash bench/redis-cluster.sh stop || true
		REDIS_URL=
	done
	[ -n "$REDIS_URL" ] || { CLUSTER_PORT=; exit 1; }
	;;
*) echo "redis: single or cluster, not $REDIS" >&2; exit 2 ;;
esac

psql "$PGURL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL="${PGURL%/*}/$DB?sslmode=disable" REDIS_URL WINDI_REDIS_PREFIX=$PREFIX
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export JWT_SECRET
export WINDI_SEND_RATE=0 WINDI_USER_SEND_RATE=0 WINDI_LOGIN_LIMIT_IP=0 WINDI_LOGIN_LIMIT_EMAIL=0 \
	WINDI_MAX_CONNS_PER_USER=0 WINDI_REGISTER_LIMIT_IP=0 WINDI_MAX_CONNS=0 WINDI_LOG_LEVEL=${WINDI_LOG_LEVEL:-warn}

urls=()
for i in $(seq 1 "$N"); do
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	WINDI_ADDR=127.0.0.1:$port WINDI_DATA_DIR=$WORK/d$i "$BIN" serve >"$WORK/server-$i.log" 2>&1 &
	pids+=($!)
	# One at a time: the first runs the migrations.
	for _ in $(seq 150); do curl -fs "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
	curl -fs "127.0.0.1:$port/readyz" >/dev/null || { tail -n 20 "$WORK/server-$i.log" >&2; exit 1; }
	urls+=("http://127.0.0.1:$port")
done
u=$(IFS=,; echo "${urls[*]}")
p=$(IFS=,; echo "${pids[*]}")
echo "== $NAME: $N replicas, Redis $REDIS ($REDIS_URL), load: $*" >&2
rc=0
out=$("$WORK/windi-load" -url "$u" -cpu-pids "$p" "$@" 2>"$WORK/tool.log") || rc=$?
sed '$d' <<<"$out"
line=$(tail -n 1 <<<"$out")
rss=$(for pid in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$pid/status"; done | paste -sd, -)
mkdir -p "$(dirname "$OUT")"
printf '{"name":"%s","replicas":%d,"redis":"%s","rss_kib":[%s],"report":%s}\n' "$NAME" "$N" "$REDIS" "$rss" "${line:-null}" >>"$OUT"
echo "$NAME: $line"
[ "$rc" = 0 ] || tail -n 20 "$WORK/tool.log" >&2
exit "$rc"
