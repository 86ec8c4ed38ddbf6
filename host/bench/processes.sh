#!/bin/bash
# Runs taskhost-bench against a scheduler and two 1-slot workers started as separate processes
# on loopback, measuring the CPU time of all three (and of the bench, the client), then stops
# them. The output (with `uptime` before and after) is appended to OUT.
#
#   host/bench/processes.sh BIN_DIR OUT BENCH_ARGS...
#   host/bench/processes.sh $CARGO_TARGET_DIR/release out.txt --repeat 3 run --shape trivial --width 1000 --height 100
#   host/bench/processes.sh $CARGO_TARGET_DIR/release out.txt --repeat 1 latency --iters 1000
#
# BIN_DIR holds `taskhost` and `taskhost-bench` (release builds). Workers keep their data
# directories (compiled modules) in ${WORKER_DATA:-/tmp/taskhost-bench-workers}.
set -u
BIN=$1
OUT=$2
shift 2
WD=${WORKER_DATA:-/tmp/taskhost-bench-workers}
D=$(mktemp -d /tmp/taskhost-bench.XXXX)
"$BIN/taskhost" scheduler --data-dir "$D/s" --listen 127.0.0.1:0 >"$D/sched.log" 2>&1 &
SP=$!
for _ in $(seq 100); do
    [ -s "$D/s/scheduler/ticket" ] && break
    sleep 0.1
done
T=$(cat "$D/s/scheduler/ticket")
"$BIN/taskhost" worker --data-dir "$WD/w0" --ticket "$T" --slots 1 --listen 127.0.0.1:0 >"$D/w0.log" 2>&1 &
W0=$!
"$BIN/taskhost" worker --data-dir "$WD/w1" --ticket "$T" --slots 1 --listen 127.0.0.1:0 >"$D/w1.log" 2>&1 &
W1=$!
sleep 1
{
    echo "== $(date -u +%H:%M:%S) uptime: $(uptime)"
    echo "== bin $BIN args: $*"
} >>"$OUT"
"$BIN/taskhost-bench" --scheduler "$D/s/scheduler/ticket" --scheduler-pid $SP \
    --worker-pid $W0 --worker-pid $W1 --cores 2 "$@" >>"$OUT" 2>&1
echo "== end $(date -u +%H:%M:%S) uptime: $(uptime)" >>"$OUT"
kill $W0 $W1 $SP 2>/dev/null
wait $W0 $W1 $SP 2>/dev/null
rm -rf "$D"
