#!/usr/bin/env python3
"""Write a synthetic Mooncake-format trace of long prompts with long outputs: the workload on
which disaggregated prefill/decode pays (docs/disaggregation.md, "The replay").

Usage: long_prompt_trace.py [--requests 2000] [--rate 2.0] [--seed 1] > trace.jsonl

Arrivals are Poisson at --rate requests per second. Each prompt starts with one of --groups
shared prefixes of --prefix-blocks trace blocks (a system prompt or a document that several
requests share), followed by blocks of its own; its length is uniform in [--min-input,
--max-input] tokens and its output in [--min-output, --max-output] tokens. Trace blocks are
--block-size tokens (512, as in the Mooncake traces). Standard library only; the same seed
writes the same trace."""
import argparse
import json
import random


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=2.0, help="arrivals per second")
    parser.add_argument("--min-input", type=int, default=12_000)
    parser.add_argument("--max-input", type=int, default=32_000)
    parser.add_argument("--min-output", type=int, default=300)
    parser.add_argument("--max-output", type=int, default=1_000)
    parser.add_argument("--groups", type=int, default=16, help="shared prefixes")
    parser.add_argument("--prefix-blocks", type=int, default=8, help="trace blocks per prefix")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    clock_ms = 0.0
    # Ids 1..groups*prefix_blocks are the shared prefixes; own blocks come after.
    next_id = args.groups * args.prefix_blocks + 1
    for _ in range(args.requests):
        clock_ms += rng.expovariate(args.rate) * 1000.0
        input_length = rng.randint(args.min_input, args.max_input)
        blocks = -(-input_length // args.block_size)
        group = rng.randrange(args.groups)
        shared = min(args.prefix_blocks, blocks)
        hash_ids = [group * args.prefix_blocks + i + 1 for i in range(shared)]
        hash_ids += list(range(next_id, next_id + blocks - shared))
        next_id += blocks - shared
        print(json.dumps({
            "timestamp": round(clock_ms, 3),
            "input_length": input_length,
            "output_length": rng.randint(args.min_output, args.max_output),
            "hash_ids": hash_ids,
        }))


if __name__ == "__main__":
    main()
