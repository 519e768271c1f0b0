#!/usr/bin/env bash
# Our disaggregated replay beside NVIDIA Dynamo 1.6.1's, on one trace, in one session.
#
# Usage: dynamo-mocker/scripts/compare_disagg.sh [TRACE] [P:D ...]
#   TRACE  a Mooncake trace (default: ../shared/traces/mooncake-fast25/synthetic_trace.jsonl)
#   P:D    prefill and decode workers (default: 2:6 4:4)
#
# Dynamo runs `../shared/anchors/dynamo_replay_disagg.py` (round-robin and its KV router, the
# mocker's default KV hand-over: instant) from the virtual environment in $DYNAMO_PEERS
# (default ~/.cache/dynamo-peers, made by ../shared/anchors/setup-peers.sh); ours runs
# `dynamo-replay` with the equivalent routers (round-robin over both pools; `kv`, Dynamo's
# cost) and every prompt on a prefill worker.
# Both use 16,384 blocks of 64 tokens per worker and trace blocks of 512. Prints one table per
# split: each figure, both values and our difference.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
trace=${1:-$root/../shared/traces/mooncake-fast25/synthetic_trace.jsonl}
shift || true
splits=("$@")
[ ${#splits[@]} -gt 0 ] || splits=(2:6 4:4)
peers=${DYNAMO_PEERS:-$HOME/.cache/dynamo-peers}
anchors=${DYNAMO_ANCHORS:-$root/../shared/anchors}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

cargo build --quiet --release -p dynamo-mocker --bin dynamo-replay --manifest-path "$root/Cargo.toml"
ours=$CARGO_TARGET_DIR/release/dynamo-replay
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for split in "${splits[@]}"; do
  p=${split%%:*}
  d=${split##*:}
  DYNAMO_MODES=round_robin,kv_router DYN_LOG=error "$peers/bin/python" \
    "$anchors/dynamo_replay_disagg.py" "$trace" "$p" "$d" 16384 64 512 > "$out/dynamo.json"
  common=(--trace "$trace" --prefill-workers "$p" --decode-workers "$d" --num-gpu-blocks 16384
          --block-size 64 --trace-block-size 512 --placement always-remote --json)
  # Dynamo's round-robin turns through both pools; its KV router routes the decode pool by load.
  "$ours" "${common[@]}" --router round-robin --handoff-router round-robin > "$out/ours.json"
  "$ours" "${common[@]}" --router kv >> "$out/ours.json"
  python3 - "$out/dynamo.json" "$out/ours.json" "$p" "$d" <<'PY'
import json, sys
dynamo = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
ours = [json.loads(line) for line in open(sys.argv[2]) if line.startswith("{")]
names = ["completed_requests", "prefix_cache_reused_ratio", "median_ttft_ms", "p90_ttft_ms",
         "p99_ttft_ms", "mean_tpot_ms", "mean_e2e_latency_ms", "duration_ms", "wall_time_ms"]
for theirs, mine in zip(dynamo, ours):
    print(f"\n{sys.argv[3]} prefill + {sys.argv[4]} decode workers, every prompt remote: "
          f"Dynamo {theirs['mode']}, ours {mine['router']}")
    print(f"{'figure':<28} {'Dynamo 1.6.1':>14} {'ours':>12} {'difference':>11}")
    for name in names:
        a, b = theirs[name], mine[name]
        diff = f"{(b - a) / a * 100:+.1f}%" if a else "-"
        print(f"{name:<28} {a:>14.6g} {b:>12.6g} {diff:>11}")
PY
done
