#!/usr/bin/env bash
# What authentication costs: GetJob on a server without keys and on one with keys, side by side,
# rounds interleaved (README "Performance"; issue #8 asks for at most 5%).
#
#   scripts/bench_auth.sh          # ROUNDS (5), DURATION seconds per round (6)
#
# With PIN=1 (and taskset), the servers run on CPU 0 and the load generator on CPU 1, so the
# servers' rate is what one server core does, not what is left over from the load generator.
#
# Uses target/release/jobtrack (cargo build --release first). The keyed server's rate limit is
# raised above the load, so the measurement includes the limiter's bookkeeping but no refusals.
set -euo pipefail
cd "$(dirname "$0")/.."
JT=target/release/jobtrack
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
KEY=$("$JT" keys create --name bench --role admin --database "$WORK/keyed.db" 2>/dev/null)
SERVER_CPU=() BENCH_CPU=()
if [ "${PIN:-0}" = 1 ]; then SERVER_CPU=(taskset -c 0) BENCH_CPU=(taskset -c 1); fi
"${SERVER_CPU[@]}" "$JT" serve --listen 127.0.0.1:18301 --database "$WORK/open.db" >/dev/null 2>&1 &
OPEN=$!
"${SERVER_CPU[@]}" "$JT" serve --listen 127.0.0.1:18302 --database "$WORK/keyed.db" \
  --key-rate 1000000000 --key-burst 1000000000 >/dev/null 2>&1 &
KEYED=$!
sleep 2
bench() { "${BENCH_CPU[@]}" "$JT" bench --server "http://127.0.0.1:$1" --server-pid "$2" --op get \
  --duration "${DURATION:-6}" --warmup 2 2>&1 | tail -1; }
for round in $(seq "${ROUNDS:-5}"); do
  echo "round=$round without-keys $(bench 18301 "$OPEN")"
  # The same header on the wire, ignored by a server without keys: what the bytes cost alone.
  echo "round=$round header-only  $(JOBTRACK_KEY=$KEY bench 18301 "$OPEN")"
  echo "round=$round with-a-key   $(JOBTRACK_KEY=$KEY bench 18302 "$KEYED")"
done | tee "$WORK/rounds.txt"
# Medians of the rates, and the median of each round's ratio to that round's run without keys
# (rounds are side by side in time, so a noisy minute hits both sides of a ratio).
awk '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  {
    split($1, r, "="); round = r[2]; kind = $2
    for (i = 3; i <= NF; i++) if ($i ~ /^rate=/) { v = $i; sub(/^rate=/, "", v); sub(/\/s$/, "", v) }
    rate[kind, round] = v; rounds = round > rounds ? round : rounds
  }
  END {
    n = split("without-keys header-only with-a-key", kinds, " ")
    for (k = 1; k <= n; k++) {
      for (i = 1; i <= rounds; i++) { x[i] = rate[kinds[k], i]; q[i] = rate[kinds[k], i] / rate["without-keys", i] }
      printf "%-13s median %6.0f calls/s   median ratio to without-keys %.3f\n", kinds[k], median(x, rounds), median(q, rounds)
    }
  }' "$WORK/rounds.txt"
