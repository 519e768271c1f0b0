#!/usr/bin/env python3
"""Write a synthetic Mooncake-format trace with a known arrival shape, for planner replays.

    synthetic_trace.py step  OUT.jsonl   # 3 req/s for 20 min, 16 req/s for 20 min, 3 req/s for 20 min
    synthetic_trace.py ramp  OUT.jsonl   # 2 -> 16 req/s over 30 min, back down over 30 min
    synthetic_trace.py sine  OUT.jsonl   # 9 +- 7 req/s, a 20-minute period, one hour
    synthetic_trace.py bursts OUT.jsonl  # 2 req/s, with bursts of 8-20 req/s (about one every
                                         # 6 minutes, lasting 30 s to 3 minutes) at random
    synthetic_trace.py diurnal OUT.jsonl # a day squeezed into an hour: 1 -> 15 -> 1 req/s,
                                         # each minute's rate off by a random factor (x0.6-1.6)

Poisson arrivals (seeded, reproducible), prompt lengths log-normal around 2,000 tokens, output
lengths log-normal around 150 tokens, one fresh hash id per 512 prompt tokens (no sharing).
`--seed N` after OUT draws another trace of the same shape (arrivals, lengths, and the bursts'
and the diurnal minutes' random parts); without it, seed 0, the traces of docs/planner.md.
"""

import json
import math
import random
import sys


def schedule(shape, seed=0):
    """The random parts of the bursts and diurnal shapes, drawn once (seeded)."""
    rng = random.Random(11 + seed)
    if shape == "bursts":
        bursts, t = [], 0.0
        while t < 3600:
            t += rng.expovariate(1 / 360)
            bursts.append((t, t + rng.uniform(30, 180), rng.uniform(8, 20)))
        return bursts
    if shape == "diurnal":
        return [math.exp(rng.gauss(0, 0.3)) for _ in range(61)]
    return None


def rate(shape, t, plan=None):
    if shape == "bursts":
        return max([r for start, end, r in plan if start <= t < end], default=2.0)
    if shape == "diurnal":
        day = 1 + 14 * (0.5 - 0.5 * math.cos(2 * math.pi * t / 3600))
        return min(16.0, day * min(1.6, max(0.6, plan[int(t // 60)])))
    if shape == "step":
        return 16.0 if 1200 <= t < 2400 else 3.0
    if shape == "ramp":
        return 2.0 + 14.0 * (1 - abs(t - 1800) / 1800)
    if shape == "sine":
        return 9.0 + 7.0 * math.sin(2 * math.pi * t / 1200)
    raise SystemExit(f"unknown shape {shape}: step, ramp, sine, bursts or diurnal")


def main():
    args = sys.argv[1:]
    seed = 0
    if len(args) == 4 and args[2] == "--seed":
        seed, args = int(args[3]), args[:2]
    if len(args) != 2:
        raise SystemExit(__doc__)
    shape, out = args
    rng = random.Random(7 + seed)
    peak = 20.0 if shape == "bursts" else 16.0
    plan = schedule(shape, seed)
    t, next_id, lines = 0.0, 0, []
    # Thinning: candidates at the peak rate, kept with probability rate(t) / peak.
    while True:
        t += rng.expovariate(peak)
        if t >= 3600:
            break
        if rng.random() > rate(shape, t, plan) / peak:
            continue
        isl = max(16, min(16000, int(rng.lognormvariate(math.log(2000), 0.6))))
        osl = max(1, min(2000, int(rng.lognormvariate(math.log(150), 0.7))))
        blocks = -(-isl // 512)
        lines.append(
            {
                "timestamp": round(t * 1000, 3),
                "input_length": isl,
                "output_length": osl,
                "hash_ids": list(range(next_id, next_id + blocks)),
            }
        )
        next_id += blocks
    with open(out, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"{len(lines)} requests to {out}")


if __name__ == "__main__":
    main()
