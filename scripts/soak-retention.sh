#!/usr/bin/env bash
# Does the SQLite file stop growing under create -> finish -> expire cycles? A server keeps
# finished jobs 2 s (--retain-finished 2s) and at most 200,000 changes of history
# (--history-max-changes; the log is pruned every minute); `jobtrack bench --op cycle` runs
# job lives (CreateJob RUNNING, a PVC report, COMPLETED) for $SLICES slices of 30 s, and the
# size of jobtrack.db (+ its WAL) and the jobs left are printed after each.
#
#   cargo build --release && scripts/soak-retention.sh     (SLICES=12: ~7 min)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${JOBTRACK_BIN:-$PWD/target/release/jobtrack}
SLICES=${SLICES:-12}
PORT=${PORT:-28082}
DIR=${DIR:-/tmp/soak-retention}
EP=http://127.0.0.1:$PORT
rm -rf "$DIR"
mkdir -p "$DIR"
(cd "$DIR" && RUST_LOG=warn exec "$BIN" serve --listen "127.0.0.1:$PORT" --retain-finished 2s \
    --sweep-every 250ms --history-max-changes 200000) >"$DIR/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID; wait $PID || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
metric() { curl -s "$EP/metrics" | awk -v m="$1" '$1 == m {print $2; exit}'; }
jobs() { curl -s "$EP/metrics" | awk '/^jobtrack_jobs\{/ {n += $2} END {print n}'; }
echo "date: $(date -u +%FT%TZ); cores: $(nproc)"
printf 'slice\tcycles/s\tjobs purged\tjobs left\tdb MiB\twal MiB\n'
for slice in $(seq "$SLICES"); do
    rate=$("$BIN" bench --server "$EP" --op cycle --duration 30 --warmup 0 --concurrency 16 \
        --connections 2 2>/dev/null | grep -o 'rate=[0-9.]*' | head -1 | cut -d= -f2)
    db=$(du -m "$DIR/jobtrack.db" | cut -f1)
    wal=$(du -m "$DIR/jobtrack.db-wal" 2>/dev/null | cut -f1 || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$slice" "$rate" "$(metric jobtrack_jobs_purged_total)" \
        "$(jobs)" "$db" "$wal"
done
