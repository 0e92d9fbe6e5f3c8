// Package faults holds WinDI Chat's fault-injection and soak tests. They
// drive real processes, the way a deployment fails: testkit's deployments
// (the windi binary built from ./cmd/windi, two or three replicas on
// Postgres and Redis behind the nginx proxy of deploy/nginx), and clients
// of the Go SDK (package client) that keep sending and receiving while a
// replica is killed (SIGKILL), Redis is restarted, Postgres is stopped for
// a few seconds, or the replicas are restarted one after the other
// (SIGTERM). Each device is a client.Conn: it reconnects, resumes by
// revision and sends again what was not acked by itself. Each scenario
// ends (load.finish) by checking that every acknowledged message is in
// history exactly once, and that every member connection's application
// saw it exactly once and in order; from the raw frames (Config.Trace) it
// also checks that the server sent none twice or out of order, which the
// Conn would hide. TestSoak churns raw sockets against one replica and
// checks that goroutines, open files and memory come back.
//
// TestRedisClusterFailover runs the replicas on a Redis Cluster the test
// starts on ports of its own (bench/redis-cluster.sh) and kills the master
// that owns the group chat's slot. The TestNet* tests put one replica in a
// network namespace they create (ip netns, veth pairs in a private
// 10.x.y.0/28, deleted when the test ends) and reach the shared Postgres
// and Redis through toxiproxy proxies they embed, then cut those links
// silently (ip link set down) or slow them (latency toxics); the shared
// services themselves are not touched. They need root.
//
// TestClientsResumeAcrossReplicaKill runs the SDKs as applications do,
// recording only what an application sees: Go client.Conn connections and
// TypeScript WindiConnection clients (sdk/ts/test/faults-client.ts, run
// with node; the test builds sdk/ts first with npm ci and npm run build,
// as .ci/run does, so it needs Node.js >= 20 with npm) send and receive
// through nginx while the replica holding most of them is killed. It
// stops neither Postgres nor Redis.
//
// The tests stop and restart the Postgres cluster and the Redis server on
// this machine (127.0.0.1:5432 and 127.0.0.1:6379, or the ports the two
// URLs below name; testkit.PostgresStop and the others), so they skip
// unless WINDI_FAULTS=1; `bash .ci/run faults` sets it. To leave the
// shared services alone, give them a Debian cluster and a Redis of their
// own:
//
//	pg_createcluster 15 faults -p 5433 --start -- --auth=trust
//	redis-server --daemonize yes --bind 127.0.0.1 --port 6390 --save "" --appendonly no
//	WINDI_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5433/postgres \
//	WINDI_TEST_REDIS_URL=redis://127.0.0.1:6390/0 WINDI_FAULTS=1 go test -v ./faults/
//
// See RELIABILITY.md for what each test promises and the figures of the
// latest run.
//
// Environment:
//
//	WINDI_FAULTS=1             run the tests (they skip otherwise)
//	WINDI_TEST_DATABASE_URL    admin URL of the Postgres to use (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable); each test creates and drops its own database
//	WINDI_TEST_REDIS_URL       the Redis (default redis://127.0.0.1:6379/0); each test uses its own key prefix
//	WINDI_TEST_BIN             a prebuilt windi binary (default: go build ./cmd/windi once per run); WINDI_FAULTS_BIN is still read
//	WINDI_TEST_LOGS            a directory to keep the servers' and nginx's logs (and the soak's heap profiles) in; WINDI_FAULTS_LOGS is still read
//	WINDI_SOAK_SECONDS         how long TestSoak churns connections (default 20)
package faults
