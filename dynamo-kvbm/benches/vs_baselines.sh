#!/usr/bin/env bash
# The storage tiers against their baselines on this machine, side by side, in one run:
#   - the host tier's put and get against a plain memcpy of the same block (benches/store_host.rs);
#   - the disk tier's batched writes and reads with O_DIRECT against fio with --direct=1, the same
#     block size, the same queue depth and the same file system (benches/store_disk.rs). fio runs
#     twice: libaio at --iodepth=QD, and QD psync threads (what the store does: QD threads each
#     issuing pwrite/pread).
# Usage: dynamo-kvbm/benches/vs_baselines.sh [DIR]   (DIR: where the files go, default $TMPDIR or /tmp)
# Environment: DYNAMO_KVBM_QUEUE_DEPTH (default 4), CARGO_TARGET_DIR (default ~/.cache/dynamo-ci/target).
set -euo pipefail
cd "$(dirname "$0")/../.."

DIR=${1:-${TMPDIR:-/tmp}}
QD=${DYNAMO_KVBM_QUEUE_DEPTH:-4}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dynamo-ci/target}
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
mkdir -p "$DIR"
LOG=$(mktemp)

# name, block bytes, blocks per batch: as in store_host.rs and store_disk.rs.
SIZES=("smollm2_135m_f32 2949120 32" "llama_70b_bf16 20971520 8")

# Criterion's output goes to $LOG; a bench that fails shows it.
bench() {
  DYNAMO_KVBM_BENCH_DIR=$DIR DYNAMO_KVBM_QUEUE_DEPTH=$QD \
    cargo bench --locked -q -p dynamo-kvbm --bench "$@" >>"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
}
echo "criterion output in $LOG"
bench store_host

# Bytes per second of a criterion bench moving `bytes` per iteration (its mean time).
ours() {
  python3 -c 'import json, sys; e = json.load(open(sys.argv[1])); print(int(sys.argv[2]) / e["mean"]["point_estimate"] * 1e9)' \
    "$CARGO_TARGET_DIR/criterion/$1/$2/new/estimates.json" "$3"
}

# Bytes per second fio reaches: fio_bw RW BS SIZE ENGINE-ARGS...
fio_bw() {
  local rw=$1 bs=$2 size=$3
  shift 3
  fio --name=kvbm --filename="$DIR/kvbm-fio-$$.blocks" --bs="$bs" --rw="$rw" --direct=1 \
    --time_based --runtime=5 --ramp_time=1 --group_reporting --output-format=json "$@" --size="$size" \
    | python3 -c 'import json, sys; j = json.load(sys.stdin)["jobs"][0]; print(j[sys.argv[1]]["bw_bytes"])' "$rw"
}

row() { # label, ours B/s, baseline B/s
  python3 -c 'import sys; o, b = float(sys.argv[2]), float(sys.argv[3]); print(f"| {sys.argv[1]} | {o / 1e9:.2f} | {b / 1e9:.2f} | {o / b:.0%} |")' "$@"
}

echo
echo "machine: $(nproc) cores, $(uname -r); files in $DIR ($(df -T "$DIR" | awk 'NR == 2 {print $2 " on " $1}')); queue depth $QD"
echo
echo "| host tier, block | ours GB/s | memcpy GB/s | ratio |"
echo "|---|---|---|---|"
for size in "${SIZES[@]}"; do
  read -r name bs _ <<<"$size"
  memcpy=$(ours "host_$name" memcpy "$bs")
  for op in put get; do
    row "$op, $name ($bs B)" "$(ours "host_$name" "$op" "$bs")" "$memcpy"
  done
done

echo
echo "| disk tier, block | ours GB/s | fio libaio GB/s | ratio | fio psync×$QD GB/s | ratio |"
echo "|---|---|---|---|---|---|"
for size in "${SIZES[@]}"; do
  read -r name bs batch <<<"$size"
  total=$((bs * batch))
  for op in write read; do
    # Ours and fio one after the other, so that both see the disk in the same state.
    bench store_disk -- "disk_$name/$op"
    libaio=$(fio_bw "$op" "$bs" "$total" --ioengine=libaio --iodepth="$QD")
    psync=$(fio_bw "$op" "$bs" "$((total / QD))" --ioengine=psync --numjobs="$QD" --offset_increment="$((total / QD))")
    for bench in "$op" "${op}_bounce"; do
      mine=$(ours "disk_$name" "$bench" "$total")
      python3 -c 'import sys; o, a, p = (float(x) for x in sys.argv[2:5]); print(f"| {sys.argv[1]} | {o / 1e9:.2f} | {a / 1e9:.2f} | {o / a:.0%} | {p / 1e9:.2f} | {o / p:.0%} |")' \
        "$bench, $name ($bs B × $batch)" "$mine" "$libaio" "$psync"
    done
  done
done
rm -f "$DIR/kvbm-fio-$$.blocks"
