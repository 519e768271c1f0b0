#!/usr/bin/env python3
"""The time per output token a Mooncake-format trace cannot beat on workers of the replay's
default engine, and where a replay's TPOT goes beyond it (docs/disaggregation.md).

Usage: tpot_parts.py TRACE [--records FILE ...] [--kv-blocks 16384] [--block-size 64]

A decode step of the replay's default engine (PolynomialTiming) takes d0 + d1*u + d2*u^2 ms,
u the tokens of the decoding sequences over the cache's token capacity, plus the prefill
polynomial when the step also computes prompt tokens. So a request's own tokens set the
least its decode steps can take: alone on a worker that computes no prompt while it decodes,
its j-th step after the first token attends to input + j tokens. The mean of that over the
requests with two output tokens or more (as the replay's mean TPOT) is the floor no router,
pool or placement can beat.

With --records (the replay's --requests-out, one file per run; records of several routers
in one file are split by their "router" field), each run's mean TPOT is split into:
  floor     the request's own tokens, as above;
  co-decode the other requests decoding on the same worker at the same time (their tokens,
            taken at the midpoint of their output, weighted by the overlap);
  rest      the measured TPOT minus both: mostly the prefill steps that shared the decode
            (stalls), and the estimate's error (about 0.005 ms where no prompt is computed
            on a decoding worker, as with every prompt remote).
Standard library only."""
import argparse
import collections
import json

# dynamo_mocker::PolynomialTiming::default(), decode part.
D2, D1, D0, MIN_DECODE = -25.74, 54.01, 5.74, 1.0


def decode_ms(usage):
    u = min(max(usage, 0.0), 1.0)
    return max(D2 * u * u + D1 * u + D0, MIN_DECODE)


def own_floor(input_tokens, output_tokens, capacity):
    """Mean step time of a request's decode alone: steps 1..output-1 after the first token."""
    steps = output_tokens - 1
    total = sum(decode_ms((input_tokens + j) / capacity) for j in range(1, steps + 1))
    return total / steps


def trace_floor(path, capacity):
    floors = []
    with open(path) as lines:
        for line in lines:
            if line.strip():
                request = json.loads(line)
                if request["output_length"] > 1:
                    floors.append(own_floor(request["input_length"], request["output_length"],
                                            capacity))
    return sum(floors) / len(floors), len(floors)


def parts(records, capacity):
    """Mean measured TPOT, floor and co-decode estimate of one run's records."""
    by_worker = collections.defaultdict(list)
    for r in records:
        by_worker[r["worker"]].append(r)
    measured, floor, estimate = [], [], []
    for r in records:
        out = r["output_tokens"]
        start, end = r["first_token_ms"], r["finish_ms"]
        if out <= 1 or end <= start:
            continue
        others = 0.0
        for o in by_worker[r["worker"]]:
            if o is r:
                continue
            overlap = min(end, o["finish_ms"]) - max(start, o["first_token_ms"])
            if overlap > 0:
                others += (o["input_tokens"] + o["output_tokens"] / 2) * overlap / (end - start)
        own = r["input_tokens"] + out / 2
        measured.append((end - start) / (out - 1))
        floor.append(own_floor(r["input_tokens"], out, capacity))
        estimate.append(decode_ms((own + others) / capacity))
    n = len(measured)
    mean = lambda xs: sum(xs) / n
    return n, mean(measured), mean(floor), mean(estimate) - mean(floor)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--records", nargs="*", default=[])
    parser.add_argument("--kv-blocks", type=int, default=16384, help="--num-gpu-blocks")
    parser.add_argument("--block-size", type=int, default=64)
    args = parser.parse_args()
    capacity = args.kv_blocks * args.block_size
    floor, n = trace_floor(args.trace, capacity)
    print(f"TPOT floor of {args.trace}: {floor:.4f} ms (mean over {n} requests)")
    if args.records:
        print("| records | router | mean TPOT | floor | co-decode | rest |")
        print("|---|---|---:|---:|---:|---:|")
    for path in args.records:
        runs = collections.defaultdict(list)
        with open(path) as lines:
            for line in lines:
                if line.strip():
                    record = json.loads(line)
                    runs[record.get("router", "")].append(record)
        for router, records in runs.items():
            n, measured, floor, co_decode = parts(records, capacity)
            rest = measured - floor - co_decode
            print(f"| {path} | {router} | {measured:.4f} | {floor:.4f} | {co_decode:.4f}"
                  f" | {rest:.4f} |")


if __name__ == "__main__":
    main()
