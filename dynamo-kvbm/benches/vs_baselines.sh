#!/usr/bin/env bash
# The storage tiers against their baselines on this machine, side by side, in one run:
#   - the host tier's put and get against a plain memcpy of the same block (benches/store_host.rs);
#   - the disk tier's batched writes and reads with O_DIRECT against fio with --direct=1, the same
#     block size, the same queue depth and the same file system (benches/store_disk.rs). fio runs
#     twice: libaio at --iodepth=QD, and QD psync jobs (each issuing pwrite/pread, as the store's
#     threads do).
# The disk is noisy on a shared machine, so the disk figures come in ROUNDS rounds, and each round
# measures every case of ours and its fio runs back to back (ours first in odd rounds, fio first in
# even ones, so that a drifting disk does not favour either). The tables give each round's ratio
# and their median: a same-run comparison that one noisy minute cannot swing.
# Usage: dynamo-kvbm/benches/vs_baselines.sh [DIR]   (DIR: where the files go, default $TMPDIR or /tmp)
# Environment: DYNAMO_KVBM_QUEUE_DEPTH (default 4), ROUNDS (default 4), SECONDS_PER_CASE (criterion's
# measurement time and fio's runtime, default 2), CARGO_TARGET_DIR (default ~/.cache/dynamo-ci/target).
set -euo pipefail
cd "$(dirname "$0")/../.."

DIR=${1:-${TMPDIR:-/tmp}}
QD=${DYNAMO_KVBM_QUEUE_DEPTH:-4}
ROUNDS=${ROUNDS:-4}
CASE_S=${SECONDS_PER_CASE:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dynamo-ci/target}
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
mkdir -p "$DIR"
WORK=$(mktemp -d)
LOG=$WORK/log
RESULTS=$WORK/results
FIO_FILE=$DIR/kvbm-fio-$$.blocks
trap 'rm -f "$FIO_FILE"; rm -rf "$WORK"' EXIT
# Criterion's estimates go here rather than into the shared target directory.
export CRITERION_HOME=$WORK/criterion

# name, block bytes, blocks per batch: as in store_host.rs and store_disk.rs.
SIZES=("smollm2_135m_f32 2949120 32" "llama_70b_bf16 20971520 8")

# Build once, then run the bench executables themselves: a cargo call per case could wait on
# the build lock of whoever else builds on this machine, between ours and fio.
executable() {
  cargo bench --locked -q -p dynamo-kvbm --bench "$1" --no-run --message-format=json 2>>"$LOG" |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
}
HOST_BENCH=$(executable store_host)
DISK_BENCH=$(executable store_disk)

# Criterion's output goes to $LOG; a bench that fails shows it. DYNAMO_KVBM_BENCH_BLOCK makes
# store_disk set up only the block size measured.
bench() {
  local exe=$1
  shift
  DYNAMO_KVBM_BENCH_DIR=$DIR DYNAMO_KVBM_QUEUE_DEPTH=$QD DYNAMO_KVBM_BENCH_BLOCK=${BLOCK:-} \
    "$exe" --bench --noplot "$@" >>"$LOG" 2>&1 ||
    { cat "$LOG"; exit 1; }
}

# Bytes per second of a criterion bench moving `bytes` per iteration (its mean time).
ours() {
  python3 -c 'import json, sys; e = json.load(open(sys.argv[1])); print(int(sys.argv[2]) / e["mean"]["point_estimate"] * 1e9)' \
    "$CRITERION_HOME/$1/$2/new/estimates.json" "$3"
}

# Bytes per second fio reaches: fio_bw RW BS SIZE ENGINE-ARGS...
fio_bw() {
  local rw=$1 bs=$2 size=$3
  shift 3
  fio --name=kvbm --filename="$FIO_FILE" --bs="$bs" --rw="$rw" --direct=1 \
    --time_based --runtime="$CASE_S" --ramp_time=1 --group_reporting --output-format=json "$@" --size="$size" \
    | python3 -c 'import json, sys; j = json.load(sys.stdin)["jobs"][0]; print(j[sys.argv[1]]["bw_bytes"])' "$rw"
}

echo
echo "machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start;" \
  "files in $DIR ($(df -T "$DIR" | awk 'NR == 2 {print $2 " on " $1}')); queue depth $QD; $ROUNDS rounds of ${CASE_S} s a case"
echo
bench "$HOST_BENCH" --warm-up-time 1 --measurement-time 3
echo "| host tier, block | ours GB/s | memcpy GB/s | ratio |"
echo "|---|---|---|---|"
for size in "${SIZES[@]}"; do
  read -r name bs _ <<<"$size"
  memcpy=$(ours "host_$name" memcpy "$bs")
  for op in put get; do
    python3 -c 'import sys; o, b = float(sys.argv[2]), float(sys.argv[3]); print(f"| {sys.argv[1]} | {o / 1e9:.2f} | {b / 1e9:.2f} | {o / b:.0%} |")' \
      "$op, $name ($bs B)" "$(ours "host_$name" "$op" "$bs")" "$memcpy"
  done
done

# One round of one case: ours (both memory kinds) and fio (libaio, psync), in the given order;
# appends "row round ours libaio psync" (bytes per second) to $RESULTS.
round() {
  local r=$1 name=$2 bs=$3 batch=$4 op=$5 first=$6
  local total=$((bs * batch)) libaio psync
  run_ours() { BLOCK=$name bench "$DISK_BENCH" --warm-up-time 1 --measurement-time "$CASE_S" "disk_$name/$op"; }
  run_fio() {
    libaio=$(fio_bw "$op" "$bs" "$total" --ioengine=libaio --iodepth="$QD")
    psync=$(fio_bw "$op" "$bs" "$((total / QD))" --ioengine=psync --numjobs="$QD" --offset_increment="$((total / QD))")
  }
  if [ "$first" = ours ]; then run_ours; run_fio; else run_fio; run_ours; fi
  local variants=("$op" "${op}_bounce" write_unstaged)
  [ "$op" = read ] && variants[2]=read_unstaged
  for variant in "${variants[@]}"; do
    echo "$variant|$name|$bs|$batch $r $(ours "disk_$name" "$variant" "$total") $libaio $psync" >>"$RESULTS"
  done
}

for r in $(seq 1 "$ROUNDS"); do
  first=ours
  [ $((r % 2)) -eq 0 ] && first=fio
  for size in "${SIZES[@]}"; do
    read -r name bs batch <<<"$size"
    for op in write read; do
      round "$r" "$name" "$bs" "$batch" "$op" "$first"
    done
  done
  echo "round $r of $ROUNDS done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

echo
python3 - "$RESULTS" "$QD" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    row, _, ours, libaio, psync = line.split()
    rows.setdefault(row, []).append((float(ours), float(libaio), float(psync)))
qd = sys.argv[2]
n = max(len(v) for v in rows.values())
head = " | ".join(f"r{i + 1}" for i in range(n))
print(f"| disk tier, block | ours GB/s | fio libaio GB/s | {head} | median ratio | fio psync×{qd} GB/s | median ratio |")
print("|---|---|---|" + "---|" * n + "---|---|---|")
for row, runs in rows.items():
    med = lambda xs: statistics.median(xs)
    vs_libaio = [o / a for o, a, _ in runs]
    vs_psync = [o / p for o, _, p in runs]
    variant, block, bs, batch = row.split("|")
    name = f"{variant}, {block} ({int(bs):,} B × {batch})"
    cells = " | ".join(f"{x:.0%}" for x in vs_libaio)
    print(f"| {name} | {med([r[0] for r in runs]) / 1e9:.2f} | {med([r[1] for r in runs]) / 1e9:.2f} | {cells} "
          f"| **{med(vs_libaio):.0%}** | {med([r[2] for r in runs]) / 1e9:.2f} | {med(vs_psync):.0%} |")
print()
print("GB/s columns: medians over the rounds; r1…: ours / fio libaio in that round.")
EOF
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
