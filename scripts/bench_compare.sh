#!/usr/bin/env bash
# Two builds side by side, rounds interleaved: what a change did to throughput.
#
#   cp target/release/jobtrack /tmp/jobtrack-before      # before the change
#   cargo build --release                                # after it
#   scripts/bench_compare.sh /tmp/jobtrack-before target/release/jobtrack            # SQLite
#   scripts/bench_compare.sh /tmp/jobtrack-before target/release/jobtrack postgres://postgres@127.0.0.1:55432
#
# Each build serves a fresh database of its own (a SQLite file, or a new database on the given
# Postgres server). One load generator drives both (CLIENT, default the after build), so only the
# servers differ; the side that goes first alternates from round to round. ROUNDS (3), OPS
# ("get update report"), DURATION (6 s, after a 2 s warm-up).
set -euo pipefail
BEFORE=$1 AFTER=$2 PG=${3:-}
PG=${PG%/}
CLIENT=${CLIENT:-$AFTER}
DIR=$(mktemp -d /tmp/jobtrack-compare.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT

database() {
  if [ -n "$PG" ]; then
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS jt_cmp_$1 WITH (FORCE)" -c "CREATE DATABASE jt_cmp_$1" >/dev/null
    echo "$PG/jt_cmp_$1"
  else
    echo "$DIR/$1.db"
  fi
}

"$BEFORE" serve --listen 127.0.0.1:18501 --database "$(database before)" >"$DIR/before.log" 2>&1 &
B=$!
"$AFTER" serve --listen 127.0.0.1:18502 --database "$(database after)" >"$DIR/after.log" 2>&1 &
A=$!
sleep 2

run() { # side port pid op round
  echo "round=$5 $4 $1 $("$CLIENT" bench --server "http://127.0.0.1:$2" --server-pid "$3" --op "$4" \
    --duration "${DURATION:-6}" --warmup 2 2>&1 | tail -1)"
}
for round in $(seq "${ROUNDS:-3}"); do
  for op in ${OPS:-get update report}; do
    if [ $((round % 2)) = 1 ]; then
      run before 18501 $B "$op" "$round"; run after 18502 $A "$op" "$round"
    else
      run after 18502 $A "$op" "$round"; run before 18501 $B "$op" "$round"
    fi
  done
done
