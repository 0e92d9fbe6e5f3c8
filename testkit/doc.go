// Package testkit runs WinDI Chat deployments for tests and for .ci/run:
// replicas of the windi binary (built once from ./cmd/windi) on a fresh
// Postgres database and a Redis key prefix of their own, or one replica on
// the embedded default (SQLite and the in-process broker), optionally
// behind nginx configured from deploy/nginx/windi.conf.template, the
// template docker-compose.yml mounts. Replicas can be killed, stopped and
// started again on the same port; the shared Postgres and Redis can be
// stopped and started (the fault tests do).
//
// Tests call Start, which ends the deployment with the test; programs
// (cmd/windi-testkit, which .ci/run calls) call New and Close. Everything
// a deployment creates is undone by Close: processes stopped, database
// dropped, Redis keys deleted, its directory kept or removed as the caller
// chose.
//
// The package is for tests and tools: nothing the server links imports
// it.
package testkit
