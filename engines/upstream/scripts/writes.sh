#!/usr/bin/env bash
# System calls per answer of our frontend in front of two instant backends, by strace: a number
# of chat completions sent one after another (curl, one connection each), streamed and not, with
# strace following every thread of the frontend; prints, per binary and mode, the count of each
# traced call divided by the number of requests. The same set-up as overhead.sh.
#
# Usage: engines/upstream/scripts/writes.sh  (from the repository root)
# Environment: GB (gateway-bench's directory), BACKEND (its instant-backend), OURS
# ("NAME=BINARY[:KIND] ...", as overhead.sh), N (20 requests per mode), PORT (28200; backends on
# PORT-99 and PORT-98), CALLS (the traced calls: writev,write,sendto,recvfrom,read,epoll_wait,futex).
set -u
GB=${GB:-../shared/anchors/gateway-bench}
BACKEND=${BACKEND:-$GB/target/release/instant-backend}
OURS=${OURS:-ours=target/release/dynamo-serve:vllm}
PORT=${PORT:-28200}
N=${N:-20}
CALLS=${CALLS:-writev,write,sendto,recvfrom,read,epoll_wait,futex}
W1=http://127.0.0.1:$((PORT - 99)); W2=http://127.0.0.1:$((PORT - 98))
export HF_HUB_OFFLINE=1
"$BACKEND" --port $((PORT - 99)) --chunks 16 > /dev/null 2>&1 & B1=$!
"$BACKEND" --port $((PORT - 98)) --chunks 16 > /dev/null 2>&1 & B2=$!
TRACE=$(mktemp)
trap 'kill $B1 $B2 2>/dev/null; rm -f "$TRACE"' EXIT
URL=http://127.0.0.1:$PORT/v1/chat/completions
body() {
  printf '{"model":"instant","messages":[{"role":"user","content":"Request %s"}],"max_tokens":16,"stream":%s}' "$1" "$2"
}
for pair in $OURS; do
  name=${pair%%=*}; binary=${pair#*=}; kind=openai
  case $binary in *:*) kind=${binary##*:}; binary=${binary%:*} ;; esac
  "$binary" frontend --host 127.0.0.1 --port "$PORT" --name instant --router round-robin \
    --engine-at "$kind=$W1,model=instant" --engine-at "$kind=$W2,model=instant" > /dev/null 2>&1 &
  GATEWAY=$!
  for _ in $(seq 600); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H 'content-type: application/json' -d "$(body 0 false)" "$URL")
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  for mode in false true; do
    # Warm the upstream connections, then trace N requests.
    for i in $(seq 4); do curl -s -o /dev/null -H 'content-type: application/json' -d "$(body "$i" "$mode")" "$URL"; done
    strace -f -qq -e trace="$CALLS" -o "$TRACE" -p "$GATEWAY" 2> /dev/null & STRACE=$!
    sleep 1  # strace has no readiness signal; its attach message is silenced by -qq
    events=0
    for i in $(seq "$N"); do
      events=$((events + $(curl -s -H 'content-type: application/json' -d "$(body "$i" "$mode")" "$URL" | grep -c '^data: ')))
    done
    kill -INT $STRACE; wait $STRACE 2>/dev/null
    counts=$(awk -v n="$N" '{ sub(/^[0-9]+ +/, ""); call = $0; sub(/\(.*/, "", call); if (call ~ /^[a-z_0-9]+$/) c[call]++ }
      END { for (k in c) printf "%s=%.1f ", k, c[k] / n }' "$TRACE")
    echo "config=$name streamed=$mode requests=$N events_per_answer=$((events / N)) per_answer: $counts"
  done
  kill $GATEWAY; wait $GATEWAY 2>/dev/null
done
