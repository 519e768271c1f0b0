#!/usr/bin/env python3
"""The planner's figures: for each trace and speed-up, the fixed-size frontier (attainment
against worker-hours for 1..MAX workers) beside the planner runs, as a Markdown table.

    planner_figures.py BINARY TRACE SPEEDUP [--router kv] [--max-workers 8]
                       [--interval-s 60] [--startup-s 30] [--trace-time]
                       [--policies sla,dynamo,load] [--start-workers 1] [-- EXTRA FLAGS]

With --trace-time the planning interval, the start-up delay and the sla policy's periods
(calm_s 180, shrink_step_s 60, hold_s 300, variability_memory_s 1800) are divided by the
speed-up, so that they cover the same share of the trace's load pattern as at speed-up 1. Flags after `--` go to every planner run (for
example `--sla-utilisation 0.3`).
"""

import argparse
import json
import subprocess
import sys
import time


# The sla policy's settings in seconds, at their defaults (dynamo_planner::policy::SlaConfig).
SLA_SECONDS = {"calm_s": 180, "shrink_step_s": 60, "hold_s": 300, "variability_memory_s": 1800}


def trace_time(scale):
    """The sla policy's periods divided by the speed-up: the same share of the trace."""
    return {k: v / scale for k, v in SLA_SECONDS.items()}


def replay(binary, args):
    started = time.time()
    out = subprocess.run([binary, *args, "--json"], check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")], time.time() - started


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser()
    p.add_argument("binary")
    p.add_argument("trace")
    p.add_argument("speedup", type=float)
    p.add_argument("--router", default="kv")
    p.add_argument("--max-workers", type=int, default=8)
    p.add_argument("--interval-s", type=float, default=60.0)
    p.add_argument("--startup-s", type=float, default=30.0)
    p.add_argument("--trace-time", action="store_true")
    p.add_argument("--policies", default="sla,dynamo,load")
    p.add_argument("--start-workers", type=int, default=1)
    a = p.parse_args(argv)
    scale = a.speedup if a.trace_time else 1.0
    base = ["--trace", a.trace, "--speedup", str(a.speedup), "--router", a.router,
            "--max-workers", str(a.max_workers),
            "--planner-interval-s", str(a.interval_s / scale), "--startup-s", str(a.startup_s / scale)]
    fixed, _ = replay(a.binary, base + ["--workers", "1", "--fixed-sweep"])
    fixed = [s for s in fixed if " fixed " in s["router"]]
    rows = [(s["router"].split(" fixed ")[1], s) for s in fixed]
    planned = []
    for policy in a.policies.split(","):
        start = ["--workers", str(a.start_workers)]
        calm = []
        if policy == "sla" and a.trace_time:
            calm = ["--sla-config", json.dumps(trace_time(scale))]
        runs, wall = replay(a.binary, base + start + ["--planner", policy] + calm + extra)
        for s in runs:
            sizes = [p["ready"] for p in s["replicas"]]
            planned.append((f"{min(sizes)}-{max(sizes)}", s, wall))
    peak = fixed[-1]
    print(f"trace {a.trace}, speed-up {a.speedup:g}, router {a.router}, interval "
          f"{a.interval_s / scale:g} s, start-up {a.startup_s / scale:g} s, planner starts with "
          f"{a.start_workers} {' '.join(extra)}")
    print()
    print("| run | workers | attainment | worker-hours | TTFT p90 ms | TPOT p90 ms | best fixed within its hours | vs fixed max (att., hours) | replay wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workers, s in rows:
        print(f"| fixed | {workers} | {s['sla_attainment']:.3f} | {s['worker_hours']:.3f} | "
              f"{s['p90_ttft_ms']:.0f} | {s['p90_tpot_ms']:.1f} | | | {s['wall_time_ms'] / 1000:.2f} |")
    for workers, s, wall in planned:
        hours, att = s["worker_hours"], s["sla_attainment"]
        within = max([f["sla_attainment"] for f in fixed if f["worker_hours"] <= hours], default=0.0)
        ratio_a = att / max(peak["sla_attainment"], 1e-9)
        ratio_h = hours / peak["worker_hours"]
        ok_a = "met" if att >= within else "missed"
        ok_b = "met" if ratio_a >= 0.9 and ratio_h <= 0.7 else "missed"
        print(f"| **{s['router']}** | {workers} | **{att:.3f}** | **{hours:.3f}** | {s['p90_ttft_ms']:.0f} | "
              f"{s['p90_tpot_ms']:.1f} | {within:.3f} ({ok_a}) | {ratio_a:.2f}x, {ratio_h:.2f}x ({ok_b}) | "
              f"{s['wall_time_ms'] / 1000:.2f} (process {wall:.2f}) |")


if __name__ == "__main__":
    main()
