#!/usr/bin/env bash
# What starting WatchJobs watchers cost: the server's peak memory while 10 `jobtrack watch`
# processes start over 100,000 jobs (SQLite), and the time until all of them are SYNCED.
#
#   scripts/bench_snapshot.sh target/release/jobtrack [another build ...]
set -euo pipefail
for BIN in "$@"; do
  D=$(mktemp -d)
  "$BIN" serve --listen 127.0.0.1:18601 --database "$D/j.db" >/dev/null 2>&1 &
  S=$!
  sleep 1.5
  "$BIN" bench --server http://127.0.0.1:18601 --op seed --count 100000 --concurrency 128 >/dev/null 2>&1
  base=$(awk '/VmRSS/ {print $2}' "/proc/$S/status")
  t0=$(date +%s.%N)
  for i in $(seq 10); do
    timeout 120 "$BIN" watch --server http://127.0.0.1:18601 >"$D/w$i.txt" 2>/dev/null &
  done
  for _ in $(seq 1200); do
    [ "$(grep -l -i synced "$D"/w*.txt 2>/dev/null | wc -l)" -ge 10 ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$S/status")
  echo "$BIN: RSS ${base} KiB before the watchers, peak ${peak} KiB; all 10 SYNCED after $(echo "$t1 - $t0" | bc) s"
  pkill -f "watch --server http://127.0.0.1:18601" || true
  kill "$S"
  sleep 0.5
  rm -rf "$D"
done
