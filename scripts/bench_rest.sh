#!/usr/bin/env bash
# The REST gateway's figures with wrk, several builds side by side in one run (README "Performance").
#
#   scripts/bench_rest.sh BINARY:DATABASE [BINARY:DATABASE ...]
#
# Make a database of 1,000,000 jobs first (about two minutes):
#   target/release/jobtrack serve --listen 127.0.0.1:18080 --database /tmp/big.db >/dev/null 2>&1 &
#   target/release/jobtrack bench --server http://127.0.0.1:18080 --op seed --count 1000000 --concurrency 256
# (A build whose migrations differ needs its own copy of the database.)
# Needs wrk (apt-get install wrk). ROUNDS (2) and DUR (12 s) are settings.
set -euo pipefail
PORT=18090
BASE="http://127.0.0.1:$PORT/api/v1/jobs"
declare -A URL=(
  [list]="$BASE?sort=-_created&max_results=25"
  [total]="$BASE?where=%7B%22state%22%3A%22RUNNING%22%7D&max_results=1"
  [deep]="$BASE?sort=-_created&page=2000&max_results=25"
)
for round in $(seq "${ROUNDS:-2}"); do
  for pair in "$@"; do
    bin=${pair%%:*} db=${pair#*:}
    "$bin" serve --listen "127.0.0.1:$PORT" --database "$db" >/dev/null 2>&1 &
    pid=$!
    until curl -s -o /dev/null "${URL[list]}"; do sleep 0.5; done
    for name in list total deep; do
      curl -s -o /dev/null "${URL[$name]}"   # the first request of a filter counts it
      out=$(wrk -t1 -c16 -d"${DUR:-12}"s --latency "${URL[$name]}")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      p50=$(awk '$1=="50%" {print $2}' <<<"$out")
      p99=$(awk '$1=="99%" {print $2}' <<<"$out")
      echo "round=$round $bin $name: $rps req/s p50=$p50 p99=$p99"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
