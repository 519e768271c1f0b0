#!/usr/bin/env python3
"""The time to first token a Mooncake-format trace cannot beat on workers of the replay's
default engine, whatever the router, the pools or the placement (docs/disaggregation.md).

Usage: ttft_lower_bound.py TRACE [--trace-block-size 512] [--block-size 64] [--chunk 8192]

Each request is computed alone on an idle worker whose cache holds every earlier prompt of
the trace, never evicted: its TTFT is the prefill of what no earlier prompt shares with it (in
whole engine blocks, at least one token), in chunks of --chunk tokens, at the replay's default
step time (PolynomialTiming: a*n^2 + b*n + c per chunk of n tokens). A real replay adds the
queues, the decode steps sharing a chunk's step and the evictions of a finite cache. Prints
the spread of this bound and the largest prefix-cache reuse any replay could report.
Standard library only."""
import argparse
import json

# dynamo_mocker::PolynomialTiming::default(), prefill part.
A, B, C = 4.209989e-7, 1.518344e-2, 16.50142


def prefill_ms(tokens, chunk):
    ms = 0.0
    while tokens > 0:
        n = min(tokens, chunk)
        ms += A * n * n + B * n + C
        tokens -= n
    return ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--trace-block-size", type=int, default=512)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8192, help="max_num_batched_tokens")
    args = parser.parse_args()
    seen = set()
    ttft, prompt, cached_total = [], 0, 0
    with open(args.trace) as lines:
        for line in lines:
            request = json.loads(line)
            hashes, length = request["hash_ids"], max(1, request["input_length"])
            matched = 0
            while matched < len(hashes) and tuple(hashes[: matched + 1]) in seen:
                matched += 1
            seen.update(tuple(hashes[: i + 1]) for i in range(len(hashes)))
            cached = min(matched * args.trace_block_size, length - 1)
            cached -= cached % args.block_size
            prompt += length
            cached_total += cached
            ttft.append(prefill_ms(length - cached, args.chunk))
    ttft.sort()

    def percentile(p):
        return ttft[min(len(ttft) - 1, int(p / 100 * len(ttft)))]

    print(
        json.dumps(
            {
                "requests": len(ttft),
                "max_prefix_cache_reused_ratio": round(cached_total / prompt, 4),
                "ttft_p50_ms": round(percentile(50), 1),
                "ttft_p90_ms": round(percentile(90), 1),
                "ttft_p99_ms": round(percentile(99), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
