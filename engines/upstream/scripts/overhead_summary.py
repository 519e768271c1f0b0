#!/usr/bin/env python3
"""Medians of engines/upstream/scripts/overhead.sh output (a file of its RESULT lines): per mode
and gateway, requests/s, p50 and p99 (ms), and each of ours against the vLLM and SGLang routers
measured in the same run, and the median CPU (µs) each request cost the gateway, both backends and
wrk. Usage: overhead_summary.py FILE"""
import sys, re, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"rep=(\d+) config=(\S+) mode=(\S+) RESULT (.*)", line)
    if not m: continue
    kv = dict(p.split("=") for p in m.group(4).split())
    cpu = tuple(float(kv.get(k, "nan")) for k in ("gateway_cpu_us", "backends_cpu_us", "wrk_cpu_us"))
    rows[(m.group(3), m.group(2))].append((float(kv["rps"]), int(kv["p50_us"]), int(kv["p99_us"]), int(kv.get("err_status",0))+int(kv.get("err_read",0))) + cpu)
for mode in ["nostream", "stream"]:
    peers = {}
    for (md, cfg), v in rows.items():
        if md == mode and cfg in ("vllm", "sglang"):
            peers[cfg] = statistics.median(x[0] for x in v)
    for (md, cfg), v in sorted(rows.items()):
        if md != mode: continue
        rps = statistics.median(x[0] for x in v)
        p50 = statistics.median(x[1] for x in v) / 1000
        p99 = statistics.median(x[2] for x in v) / 1000
        errs = sum(x[3] for x in v)
        ratio = "" if cfg in peers else " ".join(f"{rps/peers[p]:.2f}x {p}" for p in ("vllm", "sglang") if p in peers)
        cpu = " ".join(f"{name}={statistics.median(x[i] for x in v):.0f}" for i, name in ((4, "gw_us"), (5, "backends_us"), (6, "wrk_us")))
        print(f"{mode:9} {cfg:12} rps={rps:8.0f} p50={p50:6.2f} p99={p99:6.2f} errs={errs} cpu/req: {cpu} reps={[round(x[0]) for x in v]} {ratio}")
