#!/usr/bin/env bash
# Webhook delivery under write load (issue #19's speed goals), rounds interleaved, a fresh server
# (SQLite) for every run:
#   1. open-loop UpdateJob at RATE/s (1000) with 0 subscriptions, then with SUBS (100) that each
#      want every change: write rate and latency, deliveries/s, commit -> receiver's answer p99;
#   2. closed-loop UpdateJob throughput (64 callers) with no subscription, then with SUBS that want
#      only terminal changes (what a fleet's alerting subscriptions look like).
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

# Subscriptions that want only terminal changes, to a receiver that never gets a request here.
terminal_subs() {
  for _ in $(seq "${SUBS:-100}"); do
    "$BIN" subscriptions create --server "http://127.0.0.1:$PORT" --url http://127.0.0.1:9/never \
      --events terminal >/dev/null
  done
}

for round in $(seq "${ROUNDS:-3}"); do
  for subs in 0 "${SUBS:-100}"; do
    serve "open-$round-$subs"
    echo "round=$round $("$BIN" bench --server "http://127.0.0.1:$PORT" --server-pid "$PID" --op webhooks \
      --subscriptions "$subs" --rate "${RATE:-1000}" --jobs 100 --duration "${DURATION:-10}" 2>&1 | tail -1)"
    stop
  done
  for subs in 0 "${SUBS:-100}"; do
    serve "closed-$round-$subs"
    [ "$subs" = 0 ] || terminal_subs
    echo "round=$round update terminal_subscriptions=$subs $("$BIN" bench --server "http://127.0.0.1:$PORT" \
      --server-pid "$PID" --op update --duration "${DURATION:-10}" --warmup 2 2>&1 | tail -1)"
    stop
  done
done
