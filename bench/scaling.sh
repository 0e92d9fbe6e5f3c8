#!/usr/bin/env bash
# The scaled-down runs behind SCALING.md: N replicas of windi, started by
# windi-testkit (bench/kit.sh) on a fresh Postgres database and a Redis key
# prefix of their own, on either the shared Redis or a Redis Cluster of 3
# masters + 3 replicas this script starts on free loopback ports
# (bench/redis-cluster.sh), loaded by one windi-load run whose connections
# are spread over the replicas. Prints the tool's table and appends
# {"name":…,"replicas":N,"redis":…,"rss_kib":[…],"report":{…}} to $OUT
# (default bench/results/scaling.jsonl).
#
#   bench/scaling.sh NAME REPLICAS single|cluster [windi-load flags...]
#   bench/scaling.sh fanout-r2 2 single -scenario group -members 100 -devices 1 -senders 1 -open -rate 500 -duration 15s
#
# Environment: PGURL (Postgres admin URL), REDIS_BASE (the shared Redis,
# default redis://127.0.0.1:6379/0), OUT, WORK (binaries and logs; default
# a temp dir, removed on exit unless KEEP=1), BIN (a prebuilt windi), and
# any WINDI_* variable for the servers. Limits are off; WINDI_LOG_LEVEL
# defaults to warn. The servers' CPU during the send phase is charged by
# windi-load (-cpu-pids). Everything started here is stopped on exit, the
# database dropped and the keys deleted; the shared Postgres and Redis are
# only used, never restarted or flushed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NAME=$1 N=$2 REDIS=$3
shift 3
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_BASE=${REDIS_BASE:-redis://127.0.0.1:6379/0}
OUT=${OUT:-$ROOT/bench/results/scaling.jsonl}
WORK=${WORK:-$(mktemp -d -t windi-scaling.XXXXXX)}
CLUSTER_PORT=''
# shellcheck source=bench/kit.sh
. bench/kit.sh

cleanup() {
	local rc=$?
	# The deployment first: it deletes its keys from the cluster too.
	kit_down
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
kit_build "$WORK"

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

kit_up scaling "$WORK" -bin "$BIN" -replicas "$N" -redis "$REDIS_URL"
echo "== $NAME: $N replicas, Redis $REDIS ($REDIS_URL), load: $*" >&2
rc=0
out=$("$WORK/windi-load" -url "$WINDI_REPLICA_URLS" -cpu-pids "$WINDI_REPLICA_PIDS" "$@" 2>"$WORK/tool.log") || rc=$?
sed '$d' <<<"$out"
line=$(tail -n 1 <<<"$out")
IFS=, read -ra pids <<<"$WINDI_REPLICA_PIDS"
rss=$(for pid in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$pid/status"; done | paste -sd, -)
mkdir -p "$(dirname "$OUT")"
printf '{"name":"%s","replicas":%d,"redis":"%s","rss_kib":[%s],"report":%s}\n' "$NAME" "$N" "$REDIS" "$rss" "${line:-null}" >>"$OUT"
echo "$NAME: $line"
[ "$rc" = 0 ] || tail -n 20 "$WORK/tool.log" >&2
exit "$rc"
