#!/usr/bin/env bash
# Password hashing and memory (issue 15): builds ./cmd/windi from this tree
# (and, with BEFORE=<git revision>, from that revision too), then runs
# bench/hashmem against each binary: 200 concurrent registrations and 200
# concurrent logins with unknown emails, each in a fresh process on the
# embedded database, with the default limits and with every login and
# registration limit off. Prints the figures (RSS before, peak, after).
#
#   bench/hashmem.sh                 # this tree only, about 30 s
#   BEFORE=0b91ef5 bench/hashmem.sh  # also a revision before the fix (its
#                                    # bursts take up to a minute and ~4 GB)
#   N=100 bench/hashmem.sh           # another burst size
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
work=$(mktemp -d -t windi-hashmem.XXXXXX)
trap 'rm -rf "$work"' EXIT

CGO_ENABLED=0 go build -o "$work/windi-after" ./cmd/windi
go build -o "$work/hashmem" ./bench/hashmem
if [ -n "${BEFORE:-}" ]; then
	mkdir "$work/src"
	git archive "$BEFORE" | tar -x -C "$work/src"
	(cd "$work/src" && CGO_ENABLED=0 go build -o "$work/windi-before" ./cmd/windi)
	"$work/hashmem" -bin "$work/windi-before" -n "$N" -label "before($BEFORE)"
fi
"$work/hashmem" -bin "$work/windi-after" -n "$N" -label after
"$work/hashmem" -bin "$work/windi-after" -n "$N" -label after -limits off
