#!/usr/bin/env bash
# Slow consumers hurt nobody (issue #16, item 3). Each rep, interleaved, on fresh servers:
#   none     - `jobtrack bench --op update` (UpdateJob of random jobs of a 1,000-job pool, 64
#              callers over 4 connections, DURATION s after a 2 s warm-up), no watchers;
#   watched  - the same with 100 WatchJobs streams over every job that read up to SYNCED and
#              then nothing more, and 100 WatchJob streams (one job of the pool each, a
#              connection each) that read every event.
# Prints each run's line and the medians' ratio.
#
#   cargo build --release && scripts/bench-slow-consumers.sh      (REPS=3 DURATION=15; ~2 min)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${JOBTRACK_BIN:-$PWD/target/release/jobtrack}
REPS=${REPS:-3}
DURATION=${DURATION:-15}
PORT=${PORT:-28091}
DATA=${DATA:-/tmp/slow-consumers-bench}
EP=http://127.0.0.1:$PORT
export RUST_LOG=${RUST_LOG:-warn}
mkdir -p "$DATA"
: >"$DATA/server.log"

PID=
start() {
    rm -rf "$DATA/db" && mkdir -p "$DATA/db"
    (cd "$DATA/db" && exec "$BIN" serve --listen "127.0.0.1:$PORT") >>"$DATA/server.log" 2>&1 &
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

run() { # name [bench flags]
    local name=$1
    shift
    start
    local out
    out=$("$BIN" bench --server "$EP" --server-pid "$PID" --op update --duration "$DURATION" "$@" 2>&1)
    stop
    local line rate
    line=$(grep '^op=' <<<"$out")
    rate=$(sed -n 's/.* rate=\([0-9]*\)\/s.*/\1/p' <<<"$line")
    echo "$name rep=$rep rate=$rate $(grep -o 'p99=[^ ]*\|server_cpu=[^ ]*\|bench_cpu=[^ ]*' <<<"$line" | tr '\n' ' ') $(grep '^reading_watchers' <<<"$out" || true)"
    echo "$rate" >>"$DATA/$name.rates"
}

rm -f "$DATA"/*.rates
for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then
        run none
        run watched --stalled-watchers 100 --reading-watchers 100
    else
        run watched --stalled-watchers 100 --reading-watchers 100
        run none
    fi
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
none=$(median "$DATA/none.rates")
watched=$(median "$DATA/watched.rates")
echo "medians: none $none/s, watched $watched/s, ratio $(awk -v a="$watched" -v b="$none" 'BEGIN {printf "%.3f", a / b}')"
