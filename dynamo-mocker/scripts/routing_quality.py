#!/usr/bin/env python3
"""Routing quality over several sharing patterns: the table of docs/router.md.

    routing_quality.py REPLAY_BIN OUT_DIR [--dynamo-python PY] [--workers 4,8,16] [--seed 1]
                       [--mooncake TRACE] [--ttft-args "--ttft-stall-weight 0.2 ..."]

Writes the five generated traces (`dynamo-replay generate --pattern P --seed S`) into OUT_DIR,
replays each (and the Mooncake trace, if given) through 16,384 blocks of 64 tokens per worker
with `--router kv,ttft`, and prints a markdown table: reuse, p50/p90 TTFT and mean TPOT of each,
and ttft's p90 over kv's. With --dynamo-python (a Python that imports `dynamo._core`, see
../shared/anchors/setup-peers.sh) NVIDIA Dynamo's own replay of its KV router runs beside them
(../shared/anchors/dynamo_replay.py). The infinite-cache bound on reuse is printed per trace.
--ttft-args passes dynamo-replay flags (the --ttft-* weights) to the replays (they change only
`ttft`); the last line gives the worst and the geometric mean of ttft's p90 over kv's, the
figures the weights were chosen by.
"""
import argparse
import json
import math
import os
import shlex
import subprocess

PATTERNS = ["many-short-chats", "few-long-chats", "hot-prefix", "documents", "no-sharing"]
ANCHOR = os.path.join(os.path.dirname(__file__), "../../../shared/anchors/dynamo_replay.py")


def ours(replay, trace, workers, extra):
    out = subprocess.run(
        [replay, "--trace", trace, "--workers", str(workers), "--num-gpu-blocks", "16384",
         "--block-size", "64", "--trace-block-size", "512", "--router", "kv,ttft", "--json",
         *extra],
        check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows[0], rows[1]


def dynamo(python, trace, workers):
    out = subprocess.run([python, ANCHOR, trace, str(workers), "16384", "64", "512"],
                         check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return next(r for r in rows if r["mode"] == "kv_router")


def infinite_cache_reuse(trace):
    """Prompt tokens in leading 512-token blocks seen before, over all prompt tokens."""
    seen, reused, total = set(), 0, 0
    for line in open(trace):
        r = json.loads(line)
        prefix = 0
        for h in r["hash_ids"]:
            if h not in seen:
                break
            prefix += 1
        length = r["input_length"]
        cached = min(prefix * 512 // 64, length // 64)
        if cached * 64 >= length:  # the engine computes at least the last block
            cached = (length - 1) // 64
        reused += cached * 64
        total += length
        seen.update(r["hash_ids"])
    return reused / total


def cells(s):
    return "%.3f / %.1f / %.1f / %.2f" % (s["prefix_cache_reused_ratio"], s["median_ttft_ms"],
                                          s["p90_ttft_ms"], s["mean_tpot_ms"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("replay")
    p.add_argument("out_dir")
    p.add_argument("--dynamo-python")
    p.add_argument("--workers", default="4,8,16")
    p.add_argument("--seed", default="1")
    p.add_argument("--mooncake")
    p.add_argument("--ttft-args", default="")
    a = p.parse_args()
    extra = shlex.split(a.ttft_args)
    os.makedirs(a.out_dir, exist_ok=True)
    traces = []
    for pattern in PATTERNS:
        path = os.path.join(a.out_dir, pattern + ".jsonl")
        subprocess.run([a.replay, "generate", "--pattern", pattern, "--seed", a.seed,
                        "--out", path], check=True)
        traces.append((pattern, path))
    if a.mooncake:
        traces.insert(0, ("mooncake", a.mooncake))
    head = "| trace (bound) | W | kv: reuse / p50 / p90 / TPOT | ttft: reuse / p50 / p90 / TPOT | ttft p90 / kv p90 |"
    if a.dynamo_python:
        head += " Dynamo KV router: reuse / p50 / p90 / TPOT | ttft p90 / Dynamo p90 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ratios = []
    for name, path in traces:
        bound = infinite_cache_reuse(path)
        for w in [int(x) for x in a.workers.split(",")]:
            kv, ttft = ours(a.replay, path, w, extra)
            ratios.append(ttft["p90_ttft_ms"] / kv["p90_ttft_ms"])
            row = "| %s (%.2f) | %d | %s | %s | %.2f |" % (
                name, bound, w, cells(kv), cells(ttft), ttft["p90_ttft_ms"] / kv["p90_ttft_ms"])
            if a.dynamo_python:
                d = dynamo(a.dynamo_python, path, w)
                row += " %s | %.2f |" % (cells(d), ttft["p90_ttft_ms"] / d["p90_ttft_ms"])
            print(row, flush=True)
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"\nttft p90 / kv p90: worst {max(ratios):.3f}, geometric mean {geomean:.3f}")


if __name__ == "__main__":
    main()
