#!/usr/bin/env bash
# SQLite and Postgres side by side, and two replicas on one Postgres (README "Performance").
#
#   scripts/bench_backends.sh POSTGRES_SERVER_URL      # e.g. postgres://postgres@127.0.0.1:55432/postgres
#
# Uses target/release/jobtrack (cargo build --release first). Creates fresh databases; ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
JT=target/release/jobtrack
PG=$1
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
db="jt_bench_$$"
psql "$PG" -qc "CREATE DATABASE $db" >/dev/null
PGDB="${PG%/*}/$db"
serve() { "$JT" serve --listen "127.0.0.1:$1" --database "$2" >/dev/null 2>&1 & echo $!; }
SQ=$(serve 18201 "$WORK/s.db"); A=$(serve 18202 "$PGDB"); B=$(serve 18203 "$PGDB")
sleep 2
bench() { "$JT" bench --server "http://127.0.0.1:$1" --server-pid "$2" "${@:3}" 2>&1 | tail -1; }
for round in $(seq "${ROUNDS:-2}"); do
  for op in get update report; do
    echo "round=$round sqlite   $(bench 18201 "$SQ" --op "$op" --duration 6 --warmup 2)"
    echo "round=$round postgres $(bench 18202 "$A" --op "$op" --duration 6 --warmup 2)"
  done
done
echo "--- fan-out: 1,000 WatchJob streams, 100 updates/s, same server"
echo "sqlite   $(bench 18201 "$SQ" --op fanout --watchers 1000 --connections 10 --rate 100 --duration 10)"
echo "postgres $(bench 18202 "$A" --op fanout --watchers 1000 --connections 10 --rate 100 --duration 10)"
echo "--- cross-replica: written on A, delivered on B, 1,000 updates/s over 16 jobs (WatchJobs)"
for w in 10 100; do
  echo "postgres B<-A watchers=$w $(bench 18203 "$B" --op fanout --write-server http://127.0.0.1:18202 --spread 16 --watchers "$w" --connections 4 --rate 1000 --duration 10)"
done
echo "--- the same on one job (WatchJob): one job takes one durable write at a time"
echo "postgres B<-A watchers=10 $(bench 18203 "$B" --op fanout --write-server http://127.0.0.1:18202 --watchers 10 --connections 4 --rate 1000 --duration 10)"
echo "--- UpdateJob with 1 replica, then 2 replicas at once (64 callers each)"
echo "1 replica:  $(bench 18202 "$A" --op update --duration 8 --warmup 2)"
( bench 18202 "$A" --op update --duration 8 --warmup 2 > "$WORK/a.txt" ) &
( bench 18203 "$B" --op update --duration 8 --warmup 2 > "$WORK/b.txt" ) &
wait
echo "2 replicas: A $(cat "$WORK/a.txt")"
echo "            B $(cat "$WORK/b.txt")"
echo "--- ListJobs at 100,000 jobs, {\"state\":\"RUNNING\"} newest first, one caller"
"$JT" bench --server http://127.0.0.1:18201 --op seed --count 100000 --concurrency 128 >/dev/null
"$JT" bench --server http://127.0.0.1:18202 --op seed --count 100000 --concurrency 128 >/dev/null
echo "sqlite   $(bench 18201 "$SQ" --op list --concurrency 1 --connections 1 --duration 5)"
echo "postgres $(bench 18202 "$A" --op list --concurrency 1 --connections 1 --duration 5)"
kill "$SQ" "$A" "$B"
psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
