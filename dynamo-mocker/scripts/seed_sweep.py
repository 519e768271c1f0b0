#!/usr/bin/env python3
"""Run one dynamo-replay command over several tie-break seeds and print, per router label, the
first seed's figures and the spread over all seeds (docs/disaggregation.md).

Usage: seed_sweep.py [--seeds 10] [--replay PATH] -- DYNAMO-REPLAY-ARGS...

The routers break exact ties with a seeded generator (`--seed`); on a lightly loaded trace the
p90 TTFT moves by a few percent with the seed alone, so comparisons of a few percent between
two configurations are read over seeds. Prints one markdown row per label: reuse, TTFT p50, p90
and p99, mean and p90 TPOT, remote/local requests (seed 0), then the mean and range of the p90
TTFT and the mean TPOT over the seeds. Standard library only."""
import argparse
import json
import os
import statistics
import subprocess


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    parser.add_argument("--replay", default=os.path.join(target, "release", "dynamo-replay"))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = [a for a in options.args if a != "--"]
    runs = {}
    for seed in range(options.seeds):
        command = [options.replay, *args, "--json", "--seed", str(seed)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                summary = json.loads(line)
                runs.setdefault(summary["router"], []).append(summary)
    for label, summaries in runs.items():
        first = summaries[0]
        phases = first.get("disagg")
        placed = f"{phases['remote_requests']}/{phases['local_requests']}" if phases else "-"
        p90 = [s["p90_ttft_ms"] for s in summaries]
        tpot = [s["mean_tpot_ms"] for s in summaries]
        print(
            f"| {label} | {first['prefix_cache_reused_ratio']:.3f} | {first['median_ttft_ms']:.1f}"
            f" | {first['p90_ttft_ms']:.1f} | {first['p99_ttft_ms']:.1f}"
            f" | {first['mean_tpot_ms']:.2f} | {first['p90_tpot_ms']:.2f} | {placed}"
            f" | {statistics.mean(p90):.1f} ({min(p90):.0f}–{max(p90):.0f})"
            f" | {statistics.mean(tpot):.3f} |"
        )


if __name__ == "__main__":
    main()
