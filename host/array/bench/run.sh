#!/usr/bin/env bash
# Runs the seed's at-scale array expressions on taskhost and on dask.array (LocalCluster with
# 2 single-thread workers, and the threaded scheduler) in one go, for docs/benchmarks-arrays.md.
# Creates a virtual environment with Dask under ~/.cache/taskhost/dask-venv on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${TASKHOST_DASK_VENV:-$HOME/.cache/taskhost/dask-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "dask[array,distributed]" numpy
fi
export RUST_BACKTRACE=0
echo "== taskhost (embedded local cluster, 2 workers x 1 slot)"
(cd "$root" && cargo run --release -p taskhost-array --example seed -- --only-scale "$@")
echo "== dask.array, LocalCluster(n_workers=2, threads_per_worker=1)"
"$venv/bin/python" "$here/dask_array.py" --sched cluster
echo "== dask.array, threads"
"$venv/bin/python" "$here/dask_array.py" --sched threads
