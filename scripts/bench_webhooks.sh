#!/usr/bin/env bash
# Webhook delivery under write load (issue #19's speed goals), rounds interleaved, a fresh server
# (SQLite) for every run:
#   1. open-loop UpdateJob at RATE/s (1000) with 0 subscriptions, then with SUBS (100) that each
#      want the changes of one job of the pool (`--scope job`: every change delivered once, to
#      the subscription of its job), then with SUBS that each want every change (`--scope all`:
#      every change delivered SUBS times): write rate and latency, deliveries/s, commit ->
#      receiver's answer p50/p99;
#   2. the same three, closed loop (`--rate 0`: 64 callers, each sending its next write when its
#      last is answered): UpdateJob throughput beside deliveries.
#
#   cargo build --release && scripts/bench_webhooks.sh        # ROUNDS (3), DURATION (10 s)
set -euo pipefail
BIN=${BIN:-target/release/jobtrack}
DIR=$(mktemp -d /tmp/jobtrack-webhooks.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
PORT=18601

serve() { # name
  PORT=$((PORT + 1))
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --database "$DIR/$1.db" --webhook-allow-private \
    >"$DIR/$1.log" 2>&1 &
  PID=$!
  sleep 1.5
}

stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

for round in $(seq "${ROUNDS:-3}"); do
  for rate in "${RATE:-1000}" 0; do
    for variant in "0 all" "${SUBS:-100} job" "${SUBS:-100} all"; do
      read -r subs scope <<<"$variant"
      serve "run-$round-$rate-$subs-$scope"
      echo "round=$round $("$BIN" bench --server "http://127.0.0.1:$PORT" --server-pid "$PID" --op webhooks \
        --subscriptions "$subs" --scope "$scope" --rate "$rate" --jobs 100 --concurrency 64 \
        --connections 4 --duration "${DURATION:-10}" 2>&1 | tail -1)"
      stop
    done
  done
done
