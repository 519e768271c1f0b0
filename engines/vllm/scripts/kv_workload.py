#!/usr/bin/env python3
"""A shared-prefix workload for a frontend in front of live engine servers (stdlib only).

CONVERSATIONS conversations, each a long system prompt of its own (made of words drawn from a
generator seeded by the conversation) followed by TURNS short user turns; the requests go out
interleaved (every conversation's first turn, then every second turn, ..., each round in an
order shuffled by SEED), CONCURRENCY at a
time, streamed, greedy, max_tokens MAX_TOKENS, to the frontend's /v1/completions. Reports the
share of prompt tokens the servers found cached (usage.prompt_tokens_details.cached_tokens,
which the servers report), the mean time to the first token, and, with --server URL for each
engine server, the requests each one finished (vllm:request_success_total, before and after).
--out FILE writes every answer's text, to compare two runs.

  kv_workload.py --url http://127.0.0.1:18440 --server http://127.0.0.1:18441 \
      --server http://127.0.0.1:18442 --out kv.json
"""
import argparse
import json
import random
import threading
import time
import urllib.request

WORDS = (
    "the system answers questions about ships harbours weather tides cargo crews routes maps "
    "engines fuel storms lighthouses charts anchors sails rivers bridges trains stations "
    "schedules tickets passengers luggage customs ports cranes containers warehouses trucks "
    "roads tunnels canals locks pilots radios signals flags buoys reefs islands coasts bays "
    "you must be brief polite exact and never invent facts when unsure say so"
).split()


def system_prompt(conversation, words):
    rng = random.Random(1000 + conversation)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"System {conversation}: you are assistant number {conversation}. {body}.\n"


def requests(conversations, turns, words, seed):
    prompts = [system_prompt(c, words) for c in range(conversations)]
    order = random.Random(seed)
    out = []
    for turn in range(turns):
        # Each round in its own order, so that no router's turn-taking lines up with it.
        round_order = list(range(conversations))
        order.shuffle(round_order)
        for c in round_order:
            rng = random.Random(c * 100 + turn)
            question = " ".join(rng.choice(WORDS) for _ in range(12))
            out.append((c, turn, f"{prompts[c]}User: {question}?\nAssistant:"))
    return out


def server_requests(url):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def send(url, model, prompt, max_tokens):
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
    }).encode()
    request = urllib.request.Request(
        f"{url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    started = time.monotonic()
    ttft = None
    text = []
    usage = None
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    if ttft is None:
                        ttft = time.monotonic() - started
                    text.append(choice["text"])
            if chunk.get("usage"):
                usage = chunk["usage"]
    return {"text": "".join(text), "ttft": ttft, "usage": usage}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:18440")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--server", action="append", default=[])
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--words", type=int, default=300, help="words in each system prompt")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--out")
    args = parser.parse_args()

    work = requests(args.conversations, args.turns, args.words, args.seed)
    before = [server_requests(s) for s in args.server]
    results = [None] * len(work)
    next_index = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(work):
                return
            results[i] = send(args.url, args.model, work[i][2], args.max_tokens)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    after = [server_requests(s) for s in args.server]

    prompt = sum(r["usage"]["prompt_tokens"] for r in results)
    cached = sum((r["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                 for r in results)
    ttfts = [r["ttft"] for r in results if r["ttft"] is not None]
    summary = {
        "label": args.label, "requests": len(work), "prompt_tokens": prompt,
        "cached_tokens": cached, "cached_share": cached / prompt if prompt else 0.0,
        "mean_ttft_s": sum(ttfts) / len(ttfts) if ttfts else None,
        "elapsed_s": elapsed,
        "per_server": [a - b for a, b in zip(after, before)],
    }
    print(json.dumps(summary))
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"summary": summary, "answers": [
                {"conversation": c, "turn": t, "text": r["text"],
                 "cached_tokens": (r["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)}
                for (c, t, _), r in zip(work, results)]}, out, indent=1)


if __name__ == "__main__":
    main()
