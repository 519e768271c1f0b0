#!/usr/bin/env python3
"""What a disaggregated placement could reach on a Mooncake-format trace if every worker's
cached prefix could be handed, for free, to the worker that computes a prompt
(docs/disaggregation.md, "What the three goals would take").

Usage: disagg_bound.py TRACE [--splits 2:6,4:4] [--blocks 16384] [--block-size 64]
                       [--trace-block-size 512] [--cache-workers N] [--every-prompt-remote]
                       [--stall-budget MS --stall-above MS] [--deadline-ms MS]

The replay's default engine, idealised in the placement's favour:
  cache     one least-recently-used cache of all the workers' blocks (--cache-workers, default
            P+D), touched at each arrival as lru_bound.py does: a prompt finds its prefix
            wherever it is cached, and moving it costs nothing;
  prefill   a request's uncached tokens take the replay's prefill steps (chunks of 8,192) on
            a prefill worker, first come first served, or on a decode worker that computes
            no other prompt then and decodes nothing for that whole time, whichever gives the
            first token sooner; the first token is the prefill's end (no hand-over time, no
            first decode step, no decode part in the prefill's steps);
  stalls    with --stall-budget, a prompt whose first token would come later than
            --stall-above ms on the prefill pool may also go to a decoding decode worker (the
            one it stalls least), while the stalls so added (each decode sharing the prompt's
            steps waits for them) keep the mean TPOT within the budget of none;
  order     with --deadline-ms D instead, placed event by event, and the prefill pool's
            queue taken earliest deadline first (the latest start that gives the first token
            within D ms), the prompts that can no longer make it last (no stalls);
  decode    prefill workers never decode; a handed-over request decodes on the decode worker
            whose decodes, as placed so far (their lengths known), overlap it least, weighted
            by their tokens; never one computing a prompt then: it waits for that prompt's end.
            Each decode's steps take its own tokens' time alone (tpot_parts.py's floor) plus
            its stalls; the TPOT printed adds tpot_parts.py's estimate of the requests
            decoding beside it (co-decode).
The TTFT is what that cache allows plus the queue for compute; real per-worker caches and a
real link can only add to it, but an eviction that knows the future (lru_bound.py's Belady
figure) or a smarter order than first come first served could take from it: this is the
reach of an idea, not a proof over every schedule. With --every-prompt-remote and
--cache-workers P it models every prompt remote, to check it against the replay.
Standard library only.
"""
import argparse
import heapq
import json
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lru_bound import cached_blocks, prefill_ms  # noqa: E402
from tpot_parts import own_floor, parts  # noqa: E402


def uncached_tokens(trace, capacity_trace_blocks, per_trace_block, block_size):
    """Each request's uncached tokens in one LRU cache, and the reuse ratio."""
    cache, reused, total, out = OrderedDict(), 0, 0, []
    for r in trace:
        prefix = 0
        for h in r["hash_ids"]:
            if h not in cache:
                break
            prefix += 1
        cached = cached_blocks(r, prefix, per_trace_block, block_size) * block_size
        out.append(r["input_length"] - cached)
        reused += cached
        total += r["input_length"]
        for h in r["hash_ids"]:
            cache[h] = True
            cache.move_to_end(h)
        while len(cache) > capacity_trace_blocks:
            cache.popitem(last=False)
    return out, reused / total


def overlaps(intervals, start, end):
    return [iv for iv in intervals if iv[0] < end and start < iv[1]]


def start_decode(prompts, decodes, r, token, capacity, worker=None):
    """Book request `r`'s decode from `token` on `worker`, else on the decode worker whose
    decodes overlap it least (weighted by their tokens), never one computing a prompt then (it
    waits for that prompt's end). Returns its record."""
    out = r["output_length"]
    span = own_floor(r["input_length"], out, capacity) * (out - 1) if out > 1 else 0.0

    def busy(w):
        end = token + span
        shared = sum((min(end, e) - max(token, s)) * kv
                     for s, e, kv, _ in overlaps(decodes[w], token, end))
        return bool(overlaps(prompts[w], token, token + 1e-9)), shared
    w = worker if worker is not None else min(range(len(decodes)), key=busy)
    start = max([token] + [iv[1] for iv in overlaps(prompts[w], token, token + 1e-9)])
    record = {"worker": w, "input_tokens": r["input_length"], "output_tokens": out,
              "first_token_ms": start, "finish_ms": start + span}
    decodes[w].append((start, start + span, r["input_length"] + out / 2, record))
    return record


def simulate(trace, uncached, pools, capacity, allow_local=True, stall=(0.0, 0.0)):
    """Place every request in arrival order; `stall` = (budget, above): a prompt whose first
    token would come later than `above` ms on the prefill pool may be computed on a decoding
    decode worker while the stalls it adds keep the mean TPOT within `budget` ms of none."""
    prefill_workers, decode_workers = pools
    budget, above = stall
    requests = sum(1 for r in trace if r["output_length"] > 1)
    prefill_free = [0.0] * prefill_workers
    # Per decode worker: its prompt intervals (start, end) and its decode intervals (start,
    # end, tokens at mid-decode, record), ms.
    prompts = [[] for _ in range(decode_workers)]
    decodes = [[] for _ in range(decode_workers)]
    ttft, records, local, spent = [], [], 0, 0.0
    for r, tokens in zip(trace, uncached):
        arrival, compute = float(r["timestamp"]), prefill_ms(tokens)
        p = min(range(prefill_workers), key=lambda w: prefill_free[w])
        remote_end = max(arrival, prefill_free[p]) + compute
        free = [w for w in range(decode_workers)
                if not overlaps(prompts[w], arrival, arrival + compute)]

        def cost(w):
            """The mean TPOT that computing this prompt on `w` adds by stalling its decodes."""
            end = arrival + compute
            return sum((min(e, end) - max(s, arrival)) / (rec["output_tokens"] - 1)
                       for s, e, _, rec in overlaps(decodes[w], arrival, arrival + compute)
                       if rec["output_tokens"] > 1) / requests

        w = min(free, key=cost) if allow_local and free else None
        local_ok = w is not None and arrival + compute <= remote_end and (
            cost(w) == 0.0 or (remote_end - arrival > above and spent + cost(w) <= budget))
        if local_ok:
            spent += cost(w)
            for s, e, _, rec in overlaps(decodes[w], arrival, arrival + compute):
                rec["finish_ms"] += min(e, arrival + compute) - max(s, arrival)
            token = arrival + compute
            prompts[w].append((arrival, token))
            local += 1
        else:
            prefill_free[p], token, w = remote_end, remote_end, None
        record = start_decode(prompts, decodes, r, token, capacity, w)
        ttft.append(token - arrival)
        records.append(record)
    return ttft, records, local


def simulate_deadline(trace, uncached, pools, capacity, target):
    """As `simulate` without stalls, but event by event, the prefill pool taking first the
    waiting prompt that must start soonest to give its first token within `target` ms (earliest
    deadline first), and last those that cannot any more (in arrival order)."""
    prefill_workers, decode_workers = pools
    prompts = [[] for _ in range(decode_workers)]
    decodes = [[] for _ in range(decode_workers)]
    ttft, records, local = [0.0] * len(trace), [None] * len(trace), 0
    servers = [0.0] * prefill_workers
    waiting, done = [], []  # heaps: (late, latest start, index); (end, index)

    def run_until(now):
        """Start queued prompts on free prefill workers and hand over prefills up to `now`."""
        while True:
            p = min(range(prefill_workers), key=lambda q: servers[q])
            if waiting and servers[p] <= now:
                late, key, i = heapq.heappop(waiting)
                at = max(servers[p], float(trace[i]["timestamp"]))
                if not late and key < at:  # it can no longer make the target: last
                    heapq.heappush(waiting, (True, float(trace[i]["timestamp"]), i))
                    continue
                servers[p] = at + prefill_ms(uncached[i])
                heapq.heappush(done, (servers[p], i))
            elif done and done[0][0] <= now:
                end, i = heapq.heappop(done)
                ttft[i] = end - float(trace[i]["timestamp"])
                records[i] = start_decode(prompts, decodes, trace[i], end, capacity)
            else:
                return

    for i, r in enumerate(trace):
        arrival, compute = float(r["timestamp"]), prefill_ms(uncached[i])
        run_until(arrival)
        idle = [w for w in range(decode_workers)
                if not overlaps(prompts[w] + decodes[w], arrival, arrival + compute)]
        if idle:  # never later than a prefill worker
            prompts[idle[0]].append((arrival, arrival + compute))
            ttft[i], local = compute, local + 1
            records[i] = start_decode(prompts, decodes, r, arrival + compute, capacity, idle[0])
        else:
            latest = arrival + target - compute
            heapq.heappush(waiting, (latest < arrival, max(latest, arrival), i))
    run_until(float("inf"))
    return ttft, records, local


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("trace")
    a.add_argument("--splits", default="2:6,4:4")
    a.add_argument("--blocks", type=int, default=16384, help="--num-gpu-blocks")
    a.add_argument("--block-size", type=int, default=64)
    a.add_argument("--trace-block-size", type=int, default=512)
    a.add_argument("--cache-workers", type=int, default=0, help="default: P+D")
    a.add_argument("--every-prompt-remote", action="store_true",
                   help="no prompt on a decode worker (with --cache-workers P: a check of the"
                        " model against the replay's always-remote rows)")
    a.add_argument("--deadline-ms", type=float, default=0.0,
                   help="order the prefill pool's queue earliest deadline first, the deadline"
                        " this TTFT (no stalls, no --every-prompt-remote); default: first come"
                        " first served")
    a.add_argument("--stall-budget", type=float, default=0.0,
                   help="mean TPOT (ms) that prompts on decoding workers may add (default 0)")
    a.add_argument("--stall-above", type=float, default=0.0,
                   help="only for prompts whose first token would take longer than this (ms)")
    args = a.parse_args()
    trace = [json.loads(line) for line in open(args.trace) if line.strip()]
    per_trace_block = args.trace_block_size // args.block_size
    capacity = args.blocks * args.block_size
    print("| split | cache of | reuse | TTFT p50 | p90 | p99 ms | local | TPOT estimate"
          " | co-decode ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for split in args.splits.split(","):
        p, d = (int(x) for x in split.split(":"))
        workers = args.cache_workers or p + d
        uncached, reuse = uncached_tokens(trace, workers * args.blocks // per_trace_block,
                                          per_trace_block, args.block_size)
        if args.deadline_ms > 0:
            ttft, records, local = simulate_deadline(trace, uncached, (p, d), capacity,
                                                     args.deadline_ms)
        else:
            ttft, records, local = simulate(trace, uncached, (p, d), capacity,
                                            not args.every_prompt_remote,
                                            (args.stall_budget, args.stall_above))
        ttft.sort()
        pct = lambda q: ttft[min(len(ttft) - 1, int(q / 100 * len(ttft)))]  # noqa: E731
        _, measured, _, co_decode = parts(records, capacity)
        print(f"| {p}P+{d}D | {workers} workers | {reuse:.3f} | {pct(50):.1f} | {pct(90):.1f} "
              f"| {pct(99):.1f} | {local} | {measured + co_decode:.3f} | {co_decode:.3f} |")


if __name__ == "__main__":
    main()
