#!/usr/bin/env python3
"""Reads the task events of `taskhost-bench --timeline FILE` for a layered shape (stencil_1d,
nearest, spread, fft; run with --repeat 1) and prints where a step's time goes: which worker
ran each column, step times, report and dispatch delays, and the hops of chunks between
workers (docs/benchmarks-compare.md, "Where METG stands").

    taskhost-bench --pin --timeline /tmp/tl.txt --repeat 1 \\
        run --shape stencil_1d --width 4 --height 1000 --micros 100
    python3 host/bench/timeline.py /tmp/tl.txt
"""
import collections
import re
import sys
from datetime import datetime

LINE = re.compile(r'(\S+)Z\s+TRACE\s+taskhost::timeline:\s+(.*)')


def read(path):
    events = []
    for line in open(path):
        m = LINE.match(line.strip())
        if not m:
            continue
        ts = datetime.fromisoformat(m.group(1)).timestamp() * 1e6
        words = m.group(2).split()
        fields = dict(w.split('=', 1) for w in words if '=' in w)
        event = ' '.join(w for w in words if '=' not in w)
        events.append((ts, event, fields))
    events.sort(key=lambda e: e[0])
    return events


def pct(xs):
    xs = sorted(xs)
    if not xs:
        return 'n/a'
    return 'p10 %.0f  p50 %.0f  p90 %.0f us  (n %d)' % (
        xs[len(xs) // 10], xs[len(xs) // 2], xs[9 * len(xs) // 10], len(xs))


def main(path):
    events = read(path)
    place = {f['key']: (int(f['column']), int(f['step'])) for _, e, f in events if e == 'task'}
    if not place:
        sys.exit('no task events: was the run a layered shape with --timeline?')
    times = collections.defaultdict(dict)  # key -> event -> first time
    where = {}
    for ts, e, f in events:
        k = f.get('key')
        if k not in place:
            continue
        if e in ('dispatch', 'run', 'finished', 'asked', 'answer'):
            times[k].setdefault(e, ts)
        elif e == 'start':
            times[k]['start'], where[k] = ts, f['w']
            times[k]['inline'] = f.get('inline') == 'true'
        elif e == 'end':
            times[k]['end'] = ts
        elif e == 'fetched':
            times[k].setdefault('fetched@' + f['w'], ts)
    key_at = {v: k for k, v in place.items()}
    width = max(c for c, _ in place.values()) + 1
    height = max(s for _, s in place.values()) + 1
    print('tasks %d (W %d, H %d from step 1 on), run inline %d' % (
        len(place), width, height, sum(1 for k in place if times[k].get('inline'))))
    for c in range(width):
        count = collections.Counter(where.get(key_at.get((c, s))) for s in range(1, height))
        print('  column %d ran on workers (peer port: tasks) %s' % (c, dict(count)))
    ends = []
    for s in range(1, height):
        row = [times[key_at[(c, s)]].get('end') for c in range(width) if (c, s) in key_at]
        if row and all(row):
            ends.append(max(row))
    steps = [b - a for a, b in zip(ends, ends[1:])]
    cut = len(steps) // 10
    print('step time (middle 80%):           ', pct(steps[cut:len(steps) - cut]))
    done = [k for k in place if 'end' in times[k]]
    print('task run (start to end):          ', pct([times[k]['end'] - times[k]['start'] for k in done]))
    print('end to report at the scheduler:   ', pct([times[k]['finished'] - times[k]['end'] for k in done if 'finished' in times[k]]))
    print('dispatch to arrival at the worker:', pct([times[k]['run'] - times[k]['dispatch'] for k in place if 'run' in times[k]]))
    for w in sorted(set(where.values())):
        ks = [k for k in done if where.get(k) == w]
        busy = sum(times[k]['end'] - times[k]['start'] for k in ks)
        span = max(times[k]['end'] for k in ks) - min(times[k]['start'] for k in ks)
        print('worker %s busy %.2f of the run' % (w, busy / span))

    def deps(c, s):
        # The stencil's inputs; other shapes' are found from the same columns when present.
        return [(j, s - 1) for j in (c - 1, c, c + 1) if 0 <= j < width and (j, s - 1) in key_at]

    local_wait, hops = [], []
    for (c, s), k in key_at.items():
        if s < 2 or 'start' not in times[k]:
            continue
        w, last = where[k], None
        for dk in (key_at[x] for x in deps(c, s)):
            remote = where.get(dk) != w
            avail = times[dk].get('fetched@' + w) if remote else times[dk].get('end')
            if avail and (last is None or avail > last[0]):
                last = (avail, dk, remote)
        if last is None:
            continue
        local_wait.append(times[k]['start'] - last[0])
        if last[2] and 'answer' in times[last[1]]:
            dk = last[1]
            e, a = times[dk]['end'], times[dk]['answer']
            hops.append((a - e, last[0] - a, times[k]['start'] - last[0], times[k]['start'] - e))
    print('start after the last input is here:', pct(local_wait))
    if hops:
        print('when the last input came from the other worker (%d tasks):' % len(hops))
        names = ['its end to the answer', 'answer to its arrival', 'arrival to the start', 'its end to the start']
        for i, name in enumerate(names):
            print('  %-22s %s' % (name, pct([h[i] for h in hops])))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else '/dev/stdin')
