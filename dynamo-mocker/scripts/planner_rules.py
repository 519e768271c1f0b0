#!/usr/bin/env python3
"""Which of the sla policy's rules set the pools' sizes over one planner replay, in worker-hours.

    planner_rules.py BINARY TRACE SPEEDUP [--workers N | --prefill-workers P --decode-workers D]
                     [--sla-config JSON]

Replays TRACE at SPEEDUP with the `sla` planner, the setup of docs/planner.md's figures (KV
router, SLA 500 ms / 50 ms, 1 to 8 workers, a 60 s interval and 30 s start-up and the policy's
periods in trace time), and reads each planning step's `rules` from the replica timeline. The
size a step asked of a pool (ready and starting workers) is charged, until the next step, to
the rule that set it: `plan` for the hours spent at the plan, `window`, `warmup`, `calming`,
`unsettled` and `rise_room` for those kept above it while the plan wanted fewer, `pressure`
and `draining` for those asked for by latencies and queues, `shrink` for the steps that shed a
worker, `bounds` where the bounds set the size. The sums come close to the replay's
worker-hours, which also count draining workers and stop at the last request's end. Prints a
Markdown table, one row a pool. `--sla-config` settings go over the trace-time periods as
they are, in the replay's virtual seconds.
"""

import argparse
import json
import sys

from planner_figures import replay, trace_time


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binary")
    p.add_argument("trace")
    p.add_argument("speedup", type=float)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--prefill-workers", type=int, default=None)
    p.add_argument("--decode-workers", type=int, default=None)
    p.add_argument("--sla-config", default="{}")
    return p.parse_args()


def main():
    args = arguments()
    x = args.speedup
    config = {**trace_time(x), **json.loads(args.sla_config)}
    if (args.prefill_workers is None) != (args.decode_workers is None):
        sys.exit("give both --prefill-workers and --decode-workers, or neither")
    if args.prefill_workers is None:
        start = ["--workers", str(args.workers)]
    else:
        start = ["--prefill-workers", str(args.prefill_workers), "--decode-workers", str(args.decode_workers)]
    summaries, _ = replay(args.binary, ["--trace", args.trace, "--speedup", str(x), "--router", "kv",
                                        "--max-workers", "8", "--ttft-ms", "500", "--itl-ms", "50",
                                        "--planner-interval-s", str(60 / x), "--startup-s", str(30 / x),
                                        *start, "--planner", "sla", "--sla-config", json.dumps(config)])
    summary = summaries[0]
    steps = [p for p in summary["replicas"] if p.get("rules")]
    ends = [p["at_ms"] for p in steps[1:]] + [summary["duration_ms"]]
    hours = {}
    for step, end in zip(steps, ends):
        for rule in step["rules"]:
            pool = rule["pool"]
            # The decode pool's counts are `desired`, the prefill pool's `prefill_desired`.
            workers = step["prefill_desired"] if pool == "prefill" else step["desired"]
            by_rule = hours.setdefault(pool, {})
            # A step after the last request ended (the replay's end) charges nothing.
            span_h = max(0.0, end - step["at_ms"]) / 3.6e6
            by_rule[rule["rule"]] = by_rule.get(rule["rule"], 0.0) + workers * span_h
    rules = sorted({r for by_rule in hours.values() for r in by_rule})
    print(f"{args.trace.split('/')[-1]} ×{x:g}: attainment {summary['sla_attainment']:.3f}, "
          f"{summary['worker_hours']:.3f} worker-hours\n")
    print("| pool | " + " | ".join(rules) + " |")
    print("|---|" + "---|" * len(rules))
    for pool, by_rule in hours.items():
        print(f"| {pool} | " + " | ".join(f"{by_rule.get(r, 0.0):.3f}" for r in rules) + " |")


if __name__ == "__main__":
    main()
