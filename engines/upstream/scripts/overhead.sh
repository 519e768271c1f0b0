#!/usr/bin/env bash
# The adapters' overhead in front of instant backends, by gateway-bench's method
# (../shared/anchors/gateway-bench: wrk with its chat.lua, 16 connections, a 1 s warm-up run
# discarded, then 5 s measured, non-streamed then streamed), the gateways interleaved (in an order
# rotated each repetition) and each started fresh per repetition. Prints one RESULT line of wrk
# per gateway, mode and repetition, with the CPU each request cost the gateway, both backends and
# wrk; engines/upstream/scripts/overhead_summary.py prints their medians and ratios.
#
# Written beside run.sh because run.sh's start-up check reported routers that had started as
# "exited during start-up" on most configurations in the session that wrote this (2026-12-03).
#
# Usage: engines/upstream/scripts/overhead.sh  (from the repository root)
# Environment: GB (gateway-bench's directory), BACKEND (its instant-backend), PEERS (the venv of
# ../shared/anchors/setup-peers.sh), OURS ("NAME=BINARY[:KIND] ..." dynamo-serve binaries to
# compare, each fronting the backends with the adapter KIND of --engine-at: openai, the
# default, or vllm), CONFIGS (default: "vllm sglang" and OURS's names), REPS (3), CONNS (16;
# wrk runs 2 threads, 1 for a single connection), SECONDS_PER
# (5, measured seconds per run), PORT (28100; backends on PORT-99 and PORT-98).
set -u
THREADS=$(( ${CONNS:-16} < 2 ? 1 : 2 ))
GB=${GB:-../shared/anchors/gateway-bench}
BACKEND=${BACKEND:-$GB/target/release/instant-backend}
PEERS=${PEERS:-/tmp/peers}
OURS=${OURS:-ours=target/release/dynamo-serve}
PORT=${PORT:-28100}
W1=http://127.0.0.1:$((PORT - 99)); W2=http://127.0.0.1:$((PORT - 98))
declare -A BIN KIND
names=""
for pair in $OURS; do
  name=${pair%%=*}; binary=${pair#*=}
  case $binary in *:*) KIND[$name]=${binary##*:}; binary=${binary%:*} ;; *) KIND[$name]=openai ;; esac
  BIN[$name]=$binary; names="$names $name"
done
CONFIGS=${CONFIGS:-vllm sglang$names}
export HF_HUB_OFFLINE=1

"$BACKEND" --port $((PORT - 99)) --chunks 16 > /dev/null 2>&1 & B1=$!
"$BACKEND" --port $((PORT - 98)) --chunks 16 > /dev/null 2>&1 & B2=$!
trap 'kill $B1 $B2 2>/dev/null' EXIT

command_of() {
  local common="--host 127.0.0.1 --port $PORT --worker-urls $W1 $W2 --policy round_robin --prometheus-host 127.0.0.1 --prometheus-port $((PORT + 90))"
  case $1 in
    vllm) echo "$PEERS/bin/vllm-router $common --log-level warning" ;;
    sglang) echo "$PEERS/bin/python -m sglang_router.launch_router $common --log-level warn" ;;
    *) local kind=${KIND[$1]}
       echo "${BIN[$1]} frontend --host 127.0.0.1 --port $PORT --name instant --router round-robin --engine-at $kind=$W1,model=instant --engine-at $kind=$W2,model=instant" ;;
  esac
}

# CPU per request: utime + stime from /proc (in clock ticks) of the gateway's process group and
# of both backends across the measured run, and wrk's own from bash's `time`.
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))
ticks() { local sum=0 pid; for pid in "$@"; do [ -r /proc/$pid/stat ] && sum=$((sum + $(awk '{print $14 + $15}' /proc/$pid/stat))); done; echo $sum; }
RUN_OUT=$(mktemp); RUN_TIME=$(mktemp)
TIMEFORMAT='%U %S'
trap 'kill $B1 $B2 2>/dev/null; rm -f "$RUN_OUT" "$RUN_TIME"' EXIT

BODY='{"model":"instant","messages":[{"role":"user","content":"ping"}],"max_tokens":16}'
URL=http://127.0.0.1:$PORT/v1/chat/completions
read -r -a order <<< "$CONFIGS"
for rep in $(seq "${REPS:-3}"); do
  # Repetition r runs the configurations rotated by r - 1, so that none always comes first.
  shift=$(( (rep - 1) % ${#order[@]} ))
  for config in "${order[@]:shift}" "${order[@]:0:shift}"; do
    setsid bash -c "exec $(command_of "$config")" > /dev/null 2>&1 < /dev/null & GROUP=$!
    for _ in $(seq 600); do
      code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H 'content-type: application/json' -d "$BODY" "$URL")
      [ "$code" = 200 ] && break
      sleep 0.1
    done
    for mode in nostream stream; do
      wrk -t"$THREADS" -c${CONNS:-16} -d1s --timeout 5s -s "$GB/chat.lua" "$URL" -- $mode > /dev/null 2>&1
      g0=$(ticks $(pgrep -g "$GROUP")); b0=$(ticks $B1 $B2)
      # bash's `time` gives wrk's own CPU seconds (user and system).
      { time wrk -t"$THREADS" -c${CONNS:-16} -d"${SECONDS_PER:-5}"s --timeout 5s -s "$GB/chat.lua" "$URL" -- $mode > "$RUN_OUT"; } 2> "$RUN_TIME"
      g1=$(ticks $(pgrep -g "$GROUP")); b1=$(ticks $B1 $B2)
      result=$(grep RESULT "$RUN_OUT")
      requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<< "$result")
      cpu=$(awk -v g=$((g1 - g0)) -v b=$((b1 - b0)) -v n="${requests:-0}" -v tick="$TICK_US" \
        -v times="$RUN_TIME" 'BEGIN { if (n > 0) { getline w < times; split(w, t, " ");
          printf "gateway_cpu_us=%.1f backends_cpu_us=%.1f wrk_cpu_us=%.1f",
            g * tick / n, b * tick / n, (t[1] + t[2]) * 1e6 / n } }')
      echo "rep=$rep config=$config mode=$mode $result $cpu"
    done
    kill -TERM -- -$GROUP 2>/dev/null
    for _ in $(seq 50); do kill -0 -- -$GROUP 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- -$GROUP 2>/dev/null
    wait $GROUP 2>/dev/null
  done
done
