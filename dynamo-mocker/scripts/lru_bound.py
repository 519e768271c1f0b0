#!/usr/bin/env python3
"""What a router could reach if all workers' caches were one least-recently-used cache.

    lru_bound.py TRACE.jsonl [--workers 4,8,16] [--blocks 16384] [--block-size 64]
                 [--trace-block-size 512]

A router places prompts; each worker's cache then evicts least recently used blocks. The best
a placement can do without knowing the future is about what a single LRU cache of all the
workers' blocks would do: every prefix kept once, every eviction the globally oldest. This
replays the trace through such a cache (in trace blocks, each request's blocks touched in
order at its arrival) and prints, per worker count, the reuse it reaches and the p90 TTFT if
every request then ran alone on an idle worker (the replay's prefill step model, chunks of
8,192 tokens; the engine always computes a prompt's last block). A router beats these figures
only by placing prompts so that the caches together evict better than LRU (for instance by
keeping prompts that will not come back away from those that will), which needs to know the
future or predict it. For scale, it also prints the reuse of the same cache evicting the
block used again furthest in the future (Belady's choice, which no router can know).
"""
import argparse
import heapq
import json
from collections import OrderedDict


def step_ms(n):
    return 4.209989e-7 * n * n + 1.518344e-2 * n + 16.50142


def prefill_ms(tokens):
    full, rest = divmod(tokens, 8192)
    return full * step_ms(8192) + (step_ms(rest) if rest else 0.0)


def cached_blocks(r, prefix, per_trace_block, block_size):
    """The engine blocks of request `r` found cached when `prefix` trace blocks are."""
    length = r["input_length"]
    cached = min(prefix * per_trace_block, length // block_size)
    if cached * block_size >= length:  # the engine computes at least the last block
        cached = (length - 1) // block_size
    return cached


def belady_reuse(trace, capacity, per_trace_block, block_size):
    """Reuse of a cache of `capacity` trace blocks that evicts the block needed furthest ahead."""
    never = len(trace)
    next_use, later = [None] * len(trace), {}
    for i in range(len(trace) - 1, -1, -1):
        next_use[i] = [later.get(h, never) for h in trace[i]["hash_ids"]]
        for h in trace[i]["hash_ids"]:
            later[h] = i
    cache, heap, reused, total = {}, [], 0, 0
    for i, r in enumerate(trace):
        prefix = 0
        for h in r["hash_ids"]:
            if h not in cache:
                break
            prefix += 1
        reused += cached_blocks(r, prefix, per_trace_block, block_size) * block_size
        total += r["input_length"]
        for h, nxt in zip(r["hash_ids"], next_use[i]):
            cache[h] = nxt
            heapq.heappush(heap, (-nxt, h))
        while len(cache) > capacity:
            nxt, h = heapq.heappop(heap)
            if cache.get(h) == -nxt:
                del cache[h]
    return reused / total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--workers", default="4,8,16")
    p.add_argument("--blocks", type=int, default=16384)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--trace-block-size", type=int, default=512)
    a = p.parse_args()
    trace = [json.loads(line) for line in open(a.trace) if line.strip()]
    per_trace_block = a.trace_block_size // a.block_size
    for workers in [int(w) for w in a.workers.split(",")]:
        capacity = workers * a.blocks // per_trace_block
        cache, reused, total, ttfts = OrderedDict(), 0, 0, []
        for r in trace:
            length, ids = r["input_length"], r["hash_ids"]
            prefix = 0
            for h in ids:
                if h not in cache:
                    break
                prefix += 1
            cached = cached_blocks(r, prefix, per_trace_block, a.block_size)
            reused += cached * a.block_size
            total += length
            ttfts.append(prefill_ms(length - cached * a.block_size))
            for h in ids:
                cache[h] = True
                cache.move_to_end(h)
            while len(cache) > capacity:
                cache.popitem(last=False)
        ttfts.sort()
        p90 = ttfts[max(0, int(0.9 * len(ttfts)) - 1)]
        belady = belady_reuse(trace, capacity, per_trace_block, a.block_size)
        print(f"workers {workers}: one LRU cache of {workers * a.blocks} blocks: "
              f"reuse {reused / total:.3f}, p90 TTFT alone on an idle worker {p90:.1f} ms; "
              f"Belady's eviction: reuse {belady:.3f}")


if __name__ == "__main__":
    main()
