#!/usr/bin/env python3
"""The taskhost-bench shapes on Dask, for side-by-side comparison.

Builds the same graphs as `taskhost-bench` (host/bench/src/lib.rs) with Dask's low-level graph
API (a dict of key -> (function, *dependency keys)) and runs them on
`LocalCluster(n_workers=2, threads_per_worker=1, processes=True)` ("cluster") or on Dask's
threaded scheduler with 2 threads ("threads"). Every task busy-waits T microseconds and returns
`salt + 1 + sum(dependency values)`; results are checked against the same recurrence.

Prints one JSON object on the last line of stdout. Run it through run.sh (which creates the
virtualenv):

    bash host/bench/dask/run.sh suite --sched cluster
    bash host/bench/dask/run.sh run --sched threads --shape stencil_1d --width 4 --height 100
    bash host/bench/dask/run.sh metg --sched cluster
    bash host/bench/dask/run.sh latency --iters 1000
"""
import argparse
import json
import os
import statistics
import sys
import time

MASK = (1 << 64) - 1
MAX_ARITY = 8


def kernel(micros, salt, *deps):
    """The task: busy-wait `micros`, return salt + 1 + sum(deps) (wrapping at 64 bits)."""
    if micros:
        end = time.perf_counter() + micros / 1e6
        while time.perf_counter() < end:
            pass
    v = salt + 1
    for d in deps:
        v += d
    return v & MASK


def shape_deps(shape, radix, i, width, t=1):
    if shape == "no_comm":
        d = [i]
    elif shape == "stencil_1d":
        d = [j for j in (i - 1, i, i + 1) if 0 <= j < width]
    elif shape == "nearest":
        d = [j for j in range(i - (radix - 1) // 2, i + radix // 2 + 1) if 0 <= j < width]
    elif shape == "spread":
        d = [(i + k * width // max(1, radix)) % width for k in range(radix)]
    elif shape == "fft":
        levels = max(2, width).bit_length() - 1
        stride = 1 << ((max(1, t) - 1) % levels)
        d = [j for j in (i - stride, i, i + stride) if 0 <= j < width]
    else:
        raise ValueError(shape)
    return sorted(set(d))


def shape_name(shape, radix):
    return f"{shape}-{radix}" if shape in ("nearest", "spread") else shape


def build(shape, radix, width, height, micros, nonce):
    """Returns (graph dict, wanted keys, expected values, task count)."""
    dsk = {}
    val = {}
    salt = lambda i: ((nonce << 32) | i) & MASK

    def leaf(i):
        k = ("leaf", nonce, i)
        dsk[k] = (kernel, micros, salt(i))
        val[k] = (salt(i) + 1) & MASK
        return k

    def node(key, deps):
        dsk[key] = (kernel, micros, 0, *deps)
        val[key] = (1 + sum(val[d] for d in deps)) & MASK
        return key

    width = max(1, width)
    if shape == "trivial":
        wanted = [leaf(i) for i in range(width * height)]
    elif shape in ("tree", "merge"):
        fan = 2 if shape == "tree" else MAX_ARITY
        level = [leaf(i) for i in range(width)]
        depth = 0
        while len(level) > 1:
            depth += 1
            level = [node(("red", nonce, depth, j), level[j * fan:(j + 1) * fan])
                     for j in range((len(level) + fan - 1) // fan)]
        wanted = level
    else:
        row = [leaf(i) for i in range(width)]
        for t in range(1, height):
            deps = [shape_deps(shape, radix, i, width, t) for i in range(width)]
            row = [node(("p", nonce, t, i), [row[j] for j in deps[i]]) for i in range(width)]
        wanted = row
    return dsk, wanted, [val[k] for k in wanted], len(dsk)


def proc_sample():
    """(cpu seconds, rss bytes, peak rss bytes) of this process, from /proc."""
    with open("/proc/self/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, rss, peak


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Runner:
    def __init__(self, sched, cores):
        self.sched = sched
        self.cores = cores
        self.nonce = int(time.time() * 1e6) & 0xFFFFFFFF
        self.client = self.cluster = None
        if sched == "cluster":
            from distributed import Client, LocalCluster
            self.cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
            self.client.wait_for_workers(cores)
            self.run("trivial", 3, 100, 1, 0)  # warm-up

    def get(self, dsk, keys):
        if self.client is not None:
            return self.client.get(dsk, keys)
        import dask.threaded
        return dask.threaded.get(dsk, keys, num_workers=self.cores)

    def run(self, shape, radix, width, height, micros):
        self.nonce = (self.nonce + 1) & 0xFFFFFFFF
        t0 = time.perf_counter()
        dsk, wanted, expected, tasks = build(shape, radix, width, height, micros, self.nonce)
        build_s = time.perf_counter() - t0
        reset_peak_rss()
        c0, r0, _ = proc_sample()
        t0 = time.perf_counter()
        got = self.get(dsk, wanted)
        wall = time.perf_counter() - t0
        c1, _, peak = proc_sample()
        assert list(got) == expected, f"{shape}: wrong results"
        ideal = tasks * micros / 1e6 / self.cores
        return {"shape": shape_name(shape, radix), "width": width, "height": height,
                "micros": micros, "tasks": tasks, "build_s": build_s, "wall_s": wall,
                "tasks_per_s": tasks / wall, "efficiency": ideal / wall,
                "cpu_us_per_task": (c1 - c0) * 1e6 / tasks,
                "peak_rss_per_task": max(0, peak - r0) / tasks, "peak_rss": peak}

    def run_median(self, repeat, *a):
        runs = sorted((self.run(*a) for _ in range(max(1, repeat))), key=lambda r: r["wall_s"])
        return runs[len(runs) // 2]

    def metg(self, shape, radix, width, start_us, target_s, max_height, repeat):
        points = []

        def point(us):
            h = int(min(max(round(target_s * self.cores * 1e6 / (width * us)), 4), max_height))
            r = self.run_median(repeat, shape, radix, width, h, us)
            points.append(r)
            print(json.dumps({"metg_point": r}), file=sys.stderr, flush=True)
            return r["efficiency"] >= 0.5

        # The 1-2-5 sweep down to the first duration below 50%, then bisection between it
        # and the last one above, as taskhost-bench does (`metg_midpoint`).
        bracket, good = None, None
        for us in granularities(start_us):
            if not point(us):
                bracket = (us, good) if good else None
                break
            good = us
        for _ in range(METG_BISECTIONS):
            mid = bracket and metg_midpoint(*bracket)
            if not mid:
                break
            bracket = (bracket[0], mid) if point(mid) else (mid, bracket[1])
        points.sort(key=lambda p: -p["micros"])
        ok = [p for p in points if p["efficiency"] >= 0.5]
        best = min(ok, key=lambda p: p["micros"]) if ok else None
        return {"metg50_us": best["micros"] if best else None,
                "metg50_measured_us": best["wall_s"] * self.cores * 1e6 / best["tasks"] if best else None,
                "points": points}

    def latency(self, iters, warmup=20):
        if self.client is None:
            return None
        lat = []
        for i in range(iters + warmup):
            self.nonce = (self.nonce + 1) & 0xFFFFFFFF
            t0 = time.perf_counter()
            r = self.client.submit(kernel, 0, self.nonce, pure=False).result()
            d = (time.perf_counter() - t0) * 1e6
            assert r == self.nonce + 1
            if i >= warmup:
                lat.append(d)
        lat.sort()
        n = len(lat)
        return {"iters": n, "median_us": statistics.median(lat),
                "p99_us": lat[max(1, min(n, -(-99 * n // 100))) - 1], "min_us": lat[0]}

    def close(self):
        if self.client is not None:
            self.client.close()
            self.cluster.close()


METG_BISECTIONS = 2


def metg_midpoint(bad, good):
    """Geometric mean of bad and good rounded to 10 us, if strictly between and 10% apart."""
    if good <= bad or (good - bad) * 10 < good:
        return None
    mid = round((bad * good) ** 0.5 / 10) * 10
    return mid if bad < mid < good else None


def granularities(start_us):
    out = []
    decade = 1
    while decade <= max(1, start_us) * 10:
        out += [decade * m for m in (1, 2, 5) if decade * m <= max(1, start_us)]
        decade *= 10
    return sorted(out, reverse=True)


def cap(tasks_fn, size, max_tasks):
    """Shrinks `size` until tasks_fn(size) <= max_tasks."""
    while size > 2 and tasks_fn(size) > max_tasks:
        size = max(2, size * max_tasks // tasks_fn(size))
        if tasks_fn(size) > max_tasks:
            size -= 1
    return size


def suite_specs(a):
    """The same specs as `taskhost-bench suite`, shrunk to at most a.max_tasks tasks."""
    s = lambda n: max(2, round(n * a.scale))
    tw = min(1000, max(1, a.trivial_tasks))
    th = -(-a.trivial_tasks // tw)
    specs = [["trivial", 3, tw, cap(lambda h: tw * h, th, a.max_tasks), 0]]
    for shape, radix in (("no_comm", 3), ("stencil_1d", 3), ("nearest", 5), ("spread", 3),
                         ("fft", 3)):
        specs.append([shape, radix, 100, cap(lambda h: 100 * h, s(100), a.max_tasks), 0])
    w = 1
    while w < s(8192):
        w *= 2
    while 2 * w - 1 > a.max_tasks and w > 2:
        w //= 2
    specs.append(["tree", 3, w, 1, 0])
    specs.append(["merge", 3, cap(lambda n: n + n // 7 + 1, s(10000), a.max_tasks), 1, 0])
    return specs


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def versions():
    import dask
    import distributed
    return {"python": sys.version.split()[0], "dask": dask.__version__,
            "distributed": distributed.__version__}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["suite", "run", "metg", "latency"])
    p.add_argument("--sched", choices=["cluster", "threads"], default="cluster")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--shape", default="stencil_1d")
    p.add_argument("--radix", type=int, default=3)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--height", type=int, default=100)
    p.add_argument("--micros", type=int, default=0)
    p.add_argument("--iters", "--latency-iters", dest="iters", type=int, default=1000)
    p.add_argument("--start-us", "--metg-start-us", dest="start_us", type=int, default=100000)
    p.add_argument("--target-s", type=float, default=0.5)
    p.add_argument("--max-height", type=int, default=2000)
    p.add_argument("--max-tasks", type=int, default=20000)
    p.add_argument("--trivial-tasks", type=int, default=100000)
    p.add_argument("--scale", type=float, default=1.0)
    a = p.parse_args()
    out = {"system": "dask", "sched": a.sched, "cores": a.cores, "load_before": loadavg()}
    r = Runner(a.sched, a.cores)
    try:
        if a.command == "run":
            out["run"] = r.run_median(a.repeat, a.shape, a.radix, a.width, a.height, a.micros)
        elif a.command == "metg":
            out["metg"] = r.metg(a.shape, a.radix, a.width, a.start_us, a.target_s, a.max_height,
                                 a.repeat)
        elif a.command == "latency":
            out["latency"] = r.latency(a.iters)
        else:
            runs = []
            for spec in suite_specs(a):
                runs.append(r.run_median(a.repeat, *spec))
                print(json.dumps({"run": runs[-1]}), file=sys.stderr, flush=True)
            out["runs"] = runs
            out["metg"] = r.metg("stencil_1d", 3, 4, a.start_us, a.target_s, a.max_height,
                                 a.repeat)
            out["latency"] = r.latency(a.iters)
            triv = runs[0]
            out["summary"] = {"trivial_tasks": triv["tasks"], "trivial_tasks_per_s": round(triv["tasks_per_s"]),
                              "metg50_us": out["metg"]["metg50_us"],
                              "latency_median_us": out["latency"]["median_us"] if out["latency"] else None}
    finally:
        r.close()
    out["load_after"] = loadavg()
    out["versions"] = versions()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
