"""The seed's two at-scale array expressions on dask.array, for comparison with taskhost.

Run through ``host/array/bench/run.sh`` (which creates the virtual environment), or directly:

    python dask_array.py --sched cluster   # LocalCluster(n_workers=2, threads_per_worker=1)
    python dask_array.py --sched threads   # the threaded scheduler

Prints one JSON line per expression: name, scheduler, wall seconds, result.
"""

import argparse
import json
import time


def expressions(n1, n2, chunk):
    import dask.array as da

    def first():
        x = da.random.random((n1, n1), chunks=(chunk, chunk))
        return (x + x.T - x.mean(axis=0)).sum()

    def second():
        y = da.random.random((n2, n2), chunks=(chunk, chunk))
        return (y.dot(y.T + 1) - y.mean()).std()

    return [
        (f"(x + x.T - x.mean(axis=0)).sum(), {n1}x{n1}, {chunk}x{chunk} chunks", first),
        (f"(x.dot(x.T + 1) - x.mean()).std(), {n2}x{n2}, {chunk}x{chunk} chunks", second),
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sched", choices=["cluster", "threads"], default="threads")
    parser.add_argument("--n1", type=int, default=20000)
    parser.add_argument("--n2", type=int, default=8000)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()

    import dask

    client = None
    if args.sched == "cluster":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        client = Client(cluster)
    else:
        dask.config.set(scheduler="threads")

    for name, build in expressions(args.n1, args.n2, args.chunk):
        expr = build()
        start = time.perf_counter()
        value = float(expr.compute())
        wall = time.perf_counter() - start
        print(json.dumps({"expr": name, "sched": args.sched, "wall_s": round(wall, 3), "value": value}), flush=True)

    if client is not None:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
