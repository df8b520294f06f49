#!/usr/bin/env bash
# Two builds side by side on one Postgres, rounds interleaved: what a change did to writes.
#
#   cp target/release/jobtrack /tmp/jobtrack-before      # before the change
#   cargo build --release                                # after it
#   scripts/bench_compare.sh /tmp/jobtrack-before target/release/jobtrack postgres://postgres@127.0.0.1:55432
#
# Each build gets a fresh database on that server; ROUNDS (3), OPS ("update report create").
set -euo pipefail
BEFORE=$1 AFTER=$2 PG=${3%/}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for side in before after; do
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS jt_cmp_$side WITH (FORCE)" -c "CREATE DATABASE jt_cmp_$side" >/dev/null
done
"$BEFORE" serve --listen 127.0.0.1:18501 --database "$PG/jt_cmp_before" >/dev/null 2>&1 &
B=$!
"$AFTER" serve --listen 127.0.0.1:18502 --database "$PG/jt_cmp_after" >/dev/null 2>&1 &
A=$!
sleep 2
for round in $(seq "${ROUNDS:-3}"); do
  for op in ${OPS:-update report create}; do
    echo "round=$round $op before $("$BEFORE" bench --server http://127.0.0.1:18501 --server-pid $B --op "$op" --duration 6 --warmup 2 2>&1 | tail -1)"
    echo "round=$round $op after  $("$AFTER" bench --server http://127.0.0.1:18502 --server-pid $A --op "$op" --duration 6 --warmup 2 2>&1 | tail -1)"
  done
done
