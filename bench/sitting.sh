#!/usr/bin/env bash
# One run of a benchmark sitting: windi-testkit (bench/kit.sh) runs BIN as
# two replicas on a fresh Postgres database and a Redis key prefix of their
# own, or as one embedded server; windi-load runs against it with the given
# flags; the tool's table is printed and {"name":NAME,"report":…} appended
# to $WORK/results.jsonl; then everything is stopped, the database dropped
# and the keys deleted.
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
# Environment: WORK (default /tmp/windi-sitting; holds windi-load, the
# windi-testkit this script builds there when missing, the last run's
# server logs sitting-windi-N.log and tool.log, and results.jsonl),
# PROF=file.prof takes an 8 s CPU profile of replica 1 (its pprof listener)
# during the send phase, PGURL (Postgres admin URL), and any WINDI_*
# variable for the servers (limits are off here; WINDI_LOG_LEVEL defaults
# to warn). The servers' CPU during the send phase is charged by windi-load
# (-cpu-pids). Exit status: windi-load's (1 when anything was lost,
# repeated or out of order), 1 when the deployment did not start.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/windi-sitting}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
mkdir -p "$WORK"
cd "$WORK" || exit 1
BIN=$1 MODE=$2 NAME=$3
shift 3
PROF=${PROF:-}
[ -x ./windi-load ] || { echo "build windi-load into $WORK first (see the header)" >&2; exit 2; }
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
kit_build "$WORK" || exit 1
trap kit_down EXIT
trap 'exit 130' INT TERM
# Tokens outlive the run: windi-load does not refresh them.
export JWT_TTL=${JWT_TTL:-2h}
case "$MODE" in
scaled) flags=(-replicas 2) ;;
embedded) flags=(-embedded) ;;
*) echo "mode: scaled or embedded, not $MODE" >&2; exit 2 ;;
esac
kit_up sitting "$WORK" -bin "$BIN" -pprof "${flags[@]}" || exit 1
profpid=
if [ -n "$PROF" ]; then
	rm -f "$WORK/tool.log"
	(
		for _ in $(seq 300); do grep -q 'send:' "$WORK/tool.log" 2>/dev/null && break; sleep 0.3; done
		sleep 3
		curl -s "${WINDI_PPROF_URLS%%,*}/debug/pprof/profile?seconds=8" >"$WORK/$PROF"
	) &
	profpid=$!
fi
rc=0
./windi-load -url "$WINDI_REPLICA_URLS" -cpu-pids "$WINDI_REPLICA_PIDS" "$@" 2>"$WORK/tool.log" >"$WORK/out.txt" || rc=$?
sed '$d' "$WORK/out.txt" | sed "s/^/[$NAME] /"
echo "{\"name\":\"$NAME\",\"report\":$(tail -n1 "$WORK/out.txt")}" >>"$WORK/results.jsonl"
[ -z "$profpid" ] || wait "$profpid"
exit "$rc"
