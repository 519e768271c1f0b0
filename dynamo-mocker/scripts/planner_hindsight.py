#!/usr/bin/env python3
"""How far a planner could go on one trace, from the fixed pools' own requests.

    planner_hindsight.py BINARY TRACE SPEEDUP [--max-workers 8] [--interval-s 60]
                         [--startup-s 30] [--ttft-ms 500] [--itl-ms 50] [--beat X]

Replays the fixed pools of 1..MAX workers (KV router) and records which request met the SLA
in each. The trace is cut into planning intervals (--interval-s of trace time, divided by the
speed-up, as planner_tables.py plans). A pool chosen per interval is credited with the
requests that arrived in that interval and met the SLA in the fixed pool of that size, and
costs its size times the interval: scaling is free and instant, and a pool inherits no
backlog from the interval before. Three kinds of planner are measured that way:

- clairvoyant: each interval gets, in hindsight, the size that best trades requests met for
  workers at a price per worker (swept); an optimistic bound for any planner;
- reactive: each interval gets the largest of those hindsight sizes over the k intervals
  before it (k 1..10, every price), and never fewer than a floor of m workers (m 1..MAX):
  a planner that knows exactly what each past interval needed, and nothing of the interval
  to come. This is one family of such planners, not a bound on all of them;
- reactive with start-up: the same pools, but a worker added for an interval serves only
  after the start-up (--startup-s of trace time, 30 as planner_tables.py, dividing the
  interval): until then the interval is credited with the requests that met the SLA, in
  that part of it, in the pool of the interval before. The workers starting are paid for, as
  the replay pays for them. Still free of backlog, so still optimistic.

Beside them, the fixed pools themselves. Worker-hours count whole intervals up to the one of
the last arrival, so they differ a little from the replay's, which counts each pool to its last
finish (fixed 3 on the Azure code trace at ×2: 1.450 here, 1.434 in the replay). Prints a
Markdown table: for each attainment goal, the fewest worker-hours each kind needs and its
attainment per worker-hour. The last row's goal is claim B's of docs/planner.md: 0.9 times the
attainment of the largest fixed pool; within 0.7 times its worker-hours only the kinds whose
cell says so meet claim B. With --beat X, it also says whether each kind's cheapest point at
that goal reaches X attainment per worker-hour (for example another planner's figure).
"""

import argparse
import json
import os
import subprocess
import tempfile


def met_by_interval(args, workers, interval_ms, parts):
    """Requests met in the fixed pool of `workers`, by part of an interval of arrival (`parts`
    to an interval, keyed (interval, part)); the request count; the intervals."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "requests.jsonl")
        subprocess.run([args.binary, "--trace", args.trace, "--speedup", str(args.speedup), "--router", "kv",
                        "--workers", str(workers), "--requests-out", out, "--json"],
                       check=True, capture_output=True)
        met, count, last = {}, 0, 0.0
        with open(out) as lines:
            for line in lines:
                r = json.loads(line)
                count += 1
                last = max(last, r["arrival_ms"])
                first = r.get("first_token_ms")
                ok = first is not None and first - r["arrival_ms"] <= args.ttft_ms
                if ok and r["output_tokens"] > 1:
                    ok = (r["finish_ms"] - first) / (r["output_tokens"] - 1) <= args.itl_ms
                part = int(r["arrival_ms"] // (interval_ms / parts))
                key = (part // parts, part % parts)
                met[key] = met.get(key, 0) + ok
    return met, count, int(last // interval_ms) + 1


def cheapest(points, goal):
    """The point of fewest worker-hours with at least `goal` attainment, or None."""
    reached = [p for p in points if p[0] >= goal]
    return min(reached, key=lambda p: p[1]) if reached else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("trace")
    ap.add_argument("speedup", type=float)
    ap.add_argument("--max-workers", type=int, default=8)
    ap.add_argument("--interval-s", type=float, default=60.0)
    ap.add_argument("--startup-s", type=float, default=30.0)
    ap.add_argument("--ttft-ms", type=float, default=500.0)
    ap.add_argument("--itl-ms", type=float, default=50.0)
    ap.add_argument("--beat", type=float, default=None)
    args = ap.parse_args()
    interval_ms = args.interval_s / args.speedup * 1000.0
    hours = interval_ms / 3.6e6
    sizes = range(1, args.max_workers + 1)
    parts = round(args.interval_s / args.startup_s) if args.startup_s > 0 else 1
    if args.startup_s > 0 and abs(parts * args.startup_s - args.interval_s) > 1e-9:
        raise SystemExit("--startup-s must divide --interval-s")
    by_part, count, intervals = {}, 0, 0
    for n in sizes:
        by_part[n], count, intervals = met_by_interval(args, n, interval_ms, parts)
    met = {n: {} for n in sizes}
    for n in sizes:
        for (w, _), ok in by_part[n].items():
            met[n][w] = met[n].get(w, 0) + ok

    def started(pool):
        """Requests met by `pool` when a worker added serves only after the start-up's part."""
        total = 0
        for w, n in enumerate(pool):
            first = min(n, pool[w - 1]) if w > 0 and parts > 1 else n
            total += by_part[first].get((w, 0), 0)
            total += sum(by_part[n].get((w, p), 0) for p in range(1, parts))
        return total

    fixed = [(sum(met[n].values()) / count, n * intervals * hours) for n in sizes]
    clairvoyant, reactive, with_startup = [], [], []
    # Prices of a worker for an interval, in requests: free, then from a thousandth of a
    # request to a thousand, on a log scale.
    for price in [0.0] + [10 ** (i / 50 - 3) for i in range(301)]:
        pick = [max(sizes, key=lambda n: met[n].get(w, 0) - price * n) for w in range(intervals)]
        clairvoyant.append((sum(met[n].get(w, 0) for w, n in enumerate(pick)) / count, sum(pick) * hours))
        for k in range(1, 11):
            held = [max(pick[max(0, w - k):w] or pick[:1]) for w in range(intervals)]
            for floor in sizes:
                pool = [max(n, floor) for n in held]
                reactive.append((sum(met[n].get(w, 0) for w, n in enumerate(pool)) / count, sum(pool) * hours))
                with_startup.append((started(pool) / count, sum(pool) * hours))

    peak = fixed[-1]

    def cell(point, claim=False):
        if point is None:
            return "not reached"
        text = f"{point[0]:.3f} / {point[1]:.3f} ({point[0] / point[1]:.3f})"
        if claim:
            text += ", within 0.7× its worker-hours" if point[1] <= 0.7 * peak[1] else ", over 0.7× its worker-hours"
            if args.beat is not None:
                text += f", {'reaches' if point[0] / point[1] >= args.beat else 'below'} {args.beat:g}"
        return text

    print(f"{os.path.basename(args.trace)} ×{args.speedup:g}, intervals of {interval_ms / 1000:g} s, {count} requests")
    print()
    kinds = [("clairvoyant", clairvoyant), ("reactive", reactive),
             ("reactive with start-up", with_startup), ("fixed pool", fixed)]
    print("| attainment goal | " + " | ".join(name for name, _ in kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for goal in [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]:
        print(f"| {goal} | " + " | ".join(cell(cheapest(points, goal)) for _, points in kinds) + " |")
    claim = 0.9 * peak[0]
    print(f"| {claim:.3f} (claim B: 0.9 × fixed {args.max_workers}'s {peak[0]:.3f}) | "
          + " | ".join(cell(cheapest(points, claim), True) for _, points in kinds) + " |")
    for name, points in kinds:
        best = max(points, key=lambda p: p[0] / p[1] if p[1] > 0 else 0.0)
        print(f"\n{name}, best per worker-hour: {cell(best)}", end="")
    print()


if __name__ == "__main__":
    main()
