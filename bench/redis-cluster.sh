#!/usr/bin/env bash
# A local Redis Cluster for WinDI Chat's cluster mode: six redis-server
# processes on loopback (3 masters, 3 replicas), the same one .ci/run starts
# for the tests.
#
#   bench/redis-cluster.sh start   # start it and print its REDIS_URL
#   bench/redis-cluster.sh stop    # shut every node down, delete the data
#   bench/redis-cluster.sh status  # CLUSTER INFO of the first node
#   bench/redis-cluster.sh url     # print the REDIS_URL
#
# REDIS_CLUSTER_PORT (default 7100) is the first node's port; the nodes use
# it and the next five, and their cluster bus ports are the same plus 10000,
# so all twelve must be free. Data, logs and pid files live in
# REDIS_CLUSTER_DIR (default /tmp/windi-redis-cluster-<port>). It never
# touches any other Redis (the shared one on 6379 included): stop only shuts
# down the nodes whose pid files are in that folder.
#
# Nodes fail over fast (cluster-node-timeout 2000 ms) so tests that stop a
# master see its replica take over within a few seconds; nothing is
# persisted (no RDB, no AOF).
set -euo pipefail

PORT=${REDIS_CLUSTER_PORT:-7100}
DIR=${REDIS_CLUSTER_DIR:-/tmp/windi-redis-cluster-$PORT}
NODES=6
NODE_TIMEOUT_MS=2000
WAIT_SECONDS=30

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
	echo "redis-cluster.sh: $*" >&2
	exit 1
}

[[ $PORT =~ ^[1-9][0-9]*$ ]] && [ "$PORT" -ge 1024 ] && [ $((PORT + NODES - 1 + 10000)) -le 65535 ] ||
	die "REDIS_CLUSTER_PORT=$PORT: want a port from 1024 to $((65535 - 10000 - NODES + 1))"

ports() { seq "$PORT" $((PORT + NODES - 1)); }
url() {
	local u="redis://127.0.0.1:$PORT" p
	for p in $(ports); do
		if [ "$p" != "$PORT" ]; then
			if [ "$p" = $((PORT + 1)) ]; then u+="?"; else u+="&"; fi
			u+="addr=127.0.0.1:$p"
		fi
	done
	echo "$u"
}
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
node_pid() { [ -f "$DIR/$1/redis.pid" ] && cat "$DIR/$1/redis.pid"; }

# wait_until SECONDS COMMAND...: retry COMMAND every 0.2 s.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}

# replicas_synced: every replica has finished its first sync with its
# master (a replica that has not cannot take over when its master fails).
replicas_synced() {
	local p info
	for p in $(ports); do
		info=$(cli "$p" info replication 2>/dev/null) || return 1
		if grep -q '^role:slave' <<<"$info" && ! grep -q '^master_link_status:up' <<<"$info"; then return 1; fi
	done
}

cluster_ok() {
	local p
	for p in $(ports); do
		cli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
	done
}

start() {
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
		die "redis-server and redis-cli are needed (apt-get install redis-server)"
	local p pid
	for p in $(ports); do
		pid=$(node_pid "$p" || true)
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			die "a node already runs from $DIR (port $p, pid $pid): stop it first"
		fi
		listening "$p" && die "port $p is in use"
		listening $((p + 10000)) && die "cluster bus port $((p + 10000)) is in use"
	done
	rm -rf "$DIR"
	mkdir -p "$DIR"
	for p in $(ports); do
		mkdir -p "$DIR/$p"
		redis-server --port "$p" --bind 127.0.0.1 --protected-mode no \
			--cluster-enabled yes --cluster-config-file "$DIR/$p/nodes.conf" \
			--cluster-node-timeout "$NODE_TIMEOUT_MS" \
			--save "" --appendonly no --dir "$DIR/$p" \
			--daemonize yes --pidfile "$DIR/$p/redis.pid" --logfile "$DIR/$p/redis.log" \
			--enable-debug-command local
	done
	for p in $(ports); do
		wait_until 10 bash -c "[ \"\$(redis-cli -h 127.0.0.1 -p $p ping 2>/dev/null)\" = PONG ]" ||
			die "node $p did not answer; log: $DIR/$p/redis.log"
	done
	local addrs=()
	for p in $(ports); do addrs+=("127.0.0.1:$p"); done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
		{
			cat "$DIR/create.log" >&2
			die "redis-cli --cluster create failed"
		}
	wait_until "$WAIT_SECONDS" cluster_ok || die "cluster_state is not ok on every node after ${WAIT_SECONDS}s"
	wait_until "$WAIT_SECONDS" replicas_synced || die "the replicas did not sync with their masters within ${WAIT_SECONDS}s"
	url
}

stop() {
	local p pid
	[ -d "$DIR" ] || return 0
	for p in $(ports); do
		pid=$(node_pid "$p" || true)
		[ -n "$pid" ] || continue
		# The pid file names the process this script started; a node that
		# was stopped with SIGSTOP (the failover tests do) gets SIGCONT
		# first so it can exit.
		kill -CONT "$pid" 2>/dev/null || true
		kill -TERM "$pid" 2>/dev/null || true
	done
	for p in $(ports); do
		pid=$(node_pid "$p" || true)
		[ -n "$pid" ] || continue
		if ! wait_until 10 bash -c "! kill -0 $pid 2>/dev/null"; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$DIR"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) cli "$PORT" cluster info ;;
url) url ;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
