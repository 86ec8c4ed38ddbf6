#!/usr/bin/env bash
# Runs the seed's at-scale array expressions on taskhost and on dask.array (LocalCluster with
# 2 single-thread workers, and the threaded scheduler) in one go, for docs/benchmarks-arrays.md.
# Creates a virtual environment with Dask under ~/.cache/taskhost/dask-venv on first use.
# TASKHOST_BENCH_REWRITES_OFF=1 also runs taskhost with the matrix-product rewrites off
# (`seed --no-rewrites`: every block product of x.dot(x.T + 1) computed, as written).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${TASKHOST_DASK_VENV:-$HOME/.cache/taskhost/dask-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "dask[array,distributed]" numpy
fi
export RUST_BACKTRACE=0
(cd "$root" && cargo build --release -p taskhost-array --example seed)
seed="${CARGO_TARGET_DIR:-$root/target}/release/examples/seed"
echo "== machine load before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== taskhost (embedded local cluster, 2 workers x 1 slot)"
"$seed" --only-scale --workers 2 --slots 1 "$@"
echo "== taskhost (embedded local cluster, 1 worker x 2 slots)"
"$seed" --only-scale --workers 1 --slots 2 "$@"
if [ "${TASKHOST_BENCH_REWRITES_OFF:-0}" = 1 ]; then
    echo "== taskhost, product rewrites off (2 workers x 1 slot)"
    "$seed" --only-scale --workers 2 --slots 1 --no-rewrites "$@"
    echo "== taskhost, product rewrites off (1 worker x 2 slots)"
    "$seed" --only-scale --workers 1 --slots 2 --no-rewrites "$@"
fi
echo "== dask.array, LocalCluster(n_workers=2, threads_per_worker=1)"
"$venv/bin/python" "$here/dask_array.py" --sched cluster
echo "== dask.array, threads"
"$venv/bin/python" "$here/dask_array.py" --sched threads
echo "== machine load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
