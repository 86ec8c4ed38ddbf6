#!/usr/bin/env bash
# Runs taskbench.py with a virtualenv holding Dask, creating it under
# ~/.cache/taskhost/dask-venv if missing (override with TASKHOST_DASK_VENV).
# Usage: bash host/bench/dask/run.sh suite --sched cluster   (see taskbench.py)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TASKHOST_DASK_VENV:-$HOME/.cache/taskhost/dask-venv}"
if ! "$venv/bin/python" -c "import dask, distributed" >/dev/null 2>&1; then
    echo "creating $venv with dask[distributed]..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet "dask[distributed]" >&2
fi
exec "$venv/bin/python" "$here/taskbench.py" "$@"
