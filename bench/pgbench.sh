#!/usr/bin/env bash
# pgbench reference for WinDI Chat: the same Postgres, the same
# one-message-per-transaction SQL as a send (UPDATE chats … RETURNING
# last_seq, then INSERT INTO messages), 100 chats, on a scratch database
# that is dropped at the end.
#
#   bench/pgbench.sh [-c clients] [-j threads] [-T seconds]
#
# Defaults -c 32 -j 2 -T 20 (or $CLIENTS, $THREADS, $DURATION). Postgres is
# $PGURL (default postgres://postgres@127.0.0.1:5432/postgres); the user must
# be allowed to create databases. Prints pgbench's summary on stderr, the tps
# on stdout, then one JSON line (the last line of stdout):
#   {"pgbench_tps":2550.1,"clients":32,"threads":2,"seconds":20,"chats":100}
set -euo pipefail
cd "$(dirname "$0")/.." # the migration it applies is read from the repository

PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
CLIENTS=${CLIENTS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
CHATS=100
DB=windi_pgbench

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	-c) CLIENTS=$2; shift 2 ;;
	-j) THREADS=$2; shift 2 ;;
	-T) DURATION=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "pgbench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
for v in CLIENTS THREADS DURATION; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "pgbench.sh: $v must be a positive integer" >&2; exit 2; }
done
command -v pgbench >/dev/null || { echo "pgbench.sh: pgbench not found (apt-get install postgresql-client)" >&2; exit 2; }

# The scratch database's URL: PGURL with its database name replaced.
base=${PGURL%%\?*}
query=""
[ "$base" != "$PGURL" ] && query="?${PGURL#*\?}"
rest=${base#*://}
if [[ $rest == */* ]]; then
	SCRATCH="${base%/*}/$DB$query"
else
	SCRATCH="$base/$DB$query"
fi

work=$(mktemp -d)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	psql "$PGURL" -qX -v ON_ERROR_STOP=0 -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql "$PGURL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
psql "$PGURL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB" >/dev/null

# The real schema (the server's own migration, not a copy), so each
# transaction does the work a send does: same keys, constraints and
# foreign keys.
psql "$SCRATCH" -qX -v ON_ERROR_STOP=1 -f migrations/postgres/00001_init.tx.up.sql >/dev/null
psql "$SCRATCH" -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (name, email, password_hash)
    SELECT 'u' || i, 'u' || i || '@example.com', 'x' FROM generate_series(1, 1000) i;
INSERT INTO chats (name, type) SELECT 'c' || i, 'group' FROM generate_series(1, $CHATS) i;
VACUUM ANALYZE;
SQL

cat >"$work/send.sql" <<SQL
\set chat random(1, $CHATS)
\set sender random(1, 1000)
BEGIN;
UPDATE chats SET last_seq = last_seq + 1 WHERE id = :chat RETURNING last_seq \gset
INSERT INTO messages (chat_id, seq, sender_id, text, client_msg_id, created_at)
    VALUES (:chat, :last_seq, :sender, repeat('x', 100), md5(random()::text), now());
END;
SQL

echo "pgbench: $CLIENTS clients, $THREADS threads, ${DURATION}s, one message per transaction, $CHATS chats" >&2
pgbench -n -f "$work/send.sql" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$SCRATCH" >"$work/out" 2>"$work/err" || {
	cat "$work/out" "$work/err" >&2
	echo "pgbench.sh: pgbench failed" >&2
	exit 1
}
grep -vE '^(pgbench \(|transaction type|scaling factor|query mode|number of failed|number of clients|number of threads|maximum number of tries|duration)' "$work/out" >&2 || true
tps=$(awk '/^tps = / { print $3; exit }' "$work/out")
[ -n "$tps" ] || { cat "$work/out" >&2; echo "pgbench.sh: no tps in pgbench output" >&2; exit 1; }
tps=$(printf '%.1f' "$tps")
echo "pgbench tps: $tps"
printf '{"pgbench_tps":%s,"clients":%d,"threads":%d,"seconds":%d,"chats":%d}\n' "$tps" "$CLIENTS" "$THREADS" "$DURATION" "$CHATS"
