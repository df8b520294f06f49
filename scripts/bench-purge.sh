#!/usr/bin/env bash
# Purging a backlog while executors write. Each rep, interleaved, on fresh servers with the
# default flags (--retain-finished 30d, one sweep a second):
#   none  - an empty database: loadgen `put` (UpdateJob, 64 callers, 1 connection, 20 s);
#   purge - a database holding $BACKLOG finished jobs (3 PVC records each) that ended 31 days
#           ago: the same `put` while the server purges them; and how long the purge took.
# Then once more with the backlog and no load: how long the purge takes on an idle server.
#
#   cargo build --release && ../shared/loadgen/scripts/build.sh
#   scripts/bench-purge.sh          (REPS=3 BACKLOG=100000; ~4 min)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${JOBTRACK_BIN:-$PWD/target/release/jobtrack}
LOADGEN=${LOADGEN:-${LOADGEN_TARGET:-/tmp/loadgen-target}/release/loadgen}
REPS=${REPS:-3}
BACKLOG=${BACKLOG:-100000}
PORT=${PORT:-28081}
DATA=${DATA:-/tmp/purge-bench}
EP=http://127.0.0.1:$PORT
export RUST_LOG=${RUST_LOG:-warn}
mkdir -p "$DATA"
: >"$DATA/server.log"

PID=
start() { # dir
    (cd "$1" && exec "$BIN" serve --listen "127.0.0.1:$PORT") >>"$DATA/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not start; see $DATA/server.log" >&2
    exit 1
}
stop() {
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}
trap '[ -n "$PID" ] && kill -TERM "$PID"' EXIT

fresh() { # dir [backlog]
    rm -rf "$1"
    mkdir -p "$1"
    if [ "${2:-0}" -gt 0 ]; then
        "$BIN" bench --op sweep --database "$1/jobtrack.db" --count "$2" --jobs 0 \
            --finished-age-days 31 --rounds 0 >/dev/null 2>&1
    fi
}

purged() {
    curl -s "$EP/metrics" | awk '/^jobtrack_jobs_purged_total/ {print $2; exit}'
}

# Seconds from now until the server has purged the whole backlog (at most 600).
time_purge() {
    local t0 n
    t0=$(date +%s.%N)
    for _ in $(seq 3000); do
        n=$(purged)
        if [ "${n:-0}" -ge "$BACKLOG" ]; then
            echo "$(date +%s.%N) - $t0" | bc
            return 0
        fi
        sleep 0.2
    done
    echo "never"
}

put() {
    timeout 120 "$LOADGEN" put --target jobtrack --endpoint "$EP" --server-pid "$PID" \
        | jq -r '"\(.ops_per_s)\t\(.p50_ms)\t\(.p99_ms)\t\(.server_cpu_cores)"'
}

echo "date: $(date -u +%FT%TZ); cores: $(nproc);$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "backlog: $BACKLOG finished jobs with 3 PVC records each, ended 31 days ago; server defaults"
printf 'run\trep\tputs/s\tp50 ms\tp99 ms\tserver cores\tpurge s\tpurged during put\n'
for rep in $(seq "$REPS"); do
    fresh "$DATA/run"
    start "$DATA/run"
    printf 'none\t%s\t%s\t-\t-\n' "$rep" "$(put)"
    stop

    fresh "$DATA/run" "$BACKLOG"
    start "$DATA/run"
    time_purge >"$DATA/purge-time" &
    timer=$!
    line=$(put)
    during=$(purged)
    wait "$timer"
    printf 'purge\t%s\t%s\t%s\t%s\n' "$rep" "$line" "$(cat "$DATA/purge-time")" "$during"
    stop
done

fresh "$DATA/run" "$BACKLOG"
size_before=$(du -m "$DATA/run/jobtrack.db" | cut -f1)
start "$DATA/run"
printf 'idle purge of %s jobs: %s s (database file %s MiB before)\n' "$BACKLOG" "$(time_purge)" "$size_before"
stop
