#!/usr/bin/env python3
"""The figure tables of docs/planner.md, from a fresh run of every configuration.

    planner_tables.py BINARY [TRACES_DIR]

BINARY is a release build of dynamo-replay; TRACES_DIR holds azure-2023/ and mooncake-fast25/
(default ../shared/traces from the workspace root). The step, ramp and sine workloads are
generated into a temporary directory by synthetic_trace.py. Takes about a minute. As
planner_figures.py --trace-time, the planning interval, the start-up delay and the sla policy's
calm periods are divided by the speed-up.
"""
import json, os, subprocess, sys, tempfile

B = sys.argv[1]
T = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "traces")
A = os.path.join(T, "azure-2023", "AzureLLMInferenceTrace_code.csv")
M = os.path.join(T, "mooncake-fast25", "synthetic_trace.jsonl")
TMP = tempfile.mkdtemp()
for shape in ["step", "ramp", "sine"]:
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "synthetic_trace.py"), shape,
                    os.path.join(TMP, f"{shape}.jsonl")], check=True, capture_output=True)
TRACES = [("Azure code ×4", A, 4), ("Mooncake ×1", M, 1), ("Mooncake ×2", M, 2),
          ("step ×4", os.path.join(TMP, "step.jsonl"), 4), ("ramp ×4", os.path.join(TMP, "ramp.jsonl"), 4),
          ("sine ×4", os.path.join(TMP, "sine.jsonl"), 4)]
# NVIDIA Dynamo 1.6.1's planner in its own replay (../shared/anchors/dynamo_replay_planner.py
# TRACE [--speedup X] --target sla --initial 4 --load), measured 2026-12-03: (attainment,
# GPU-hours). It does not change with our code, so it is not rerun here.
DYNAMO = {"Azure code ×4": (0.284, 0.475), "Mooncake ×1": (0.696, 1.012), "Mooncake ×2": (0.774, 0.766),
          "step ×4": (0.799, 1.046), "ramp ×4": (0.830, 1.074), "sine ×4": (0.810, 1.177)}
B_FLAGS = ["--sla-utilisation", "0.3", "--predictor", "kalman"]


def run(args):
    out = subprocess.run([B, *args, "--json"], check=True, capture_output=True, text=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def base(path, x):
    return ["--trace", path, "--speedup", str(x), "--router", "kv", "--max-workers", "8",
            "--planner-interval-s", str(60 / x), "--startup-s", str(30 / x)]


fixed, planned, wall = {}, {}, {}
for name, path, x in TRACES:
    fixed[name] = [s for s in run(base(path, x) + ["--workers", "1", "--fixed-sweep"]) if " fixed " in s["router"]]
    for setting, start, extra in [("defaults", 1, []), ("start4", 4, []), ("B", 4, B_FLAGS)]:
        for policy in ["sla", "dynamo", "load"]:
            calm = []
            if policy == "sla":
                # Trace time: the sla policy's calm periods shrink with the speed-up too.
                calm = ["--sla-config", json.dumps({"calm_s": 180 / x, "shrink_step_s": 60 / x})]
            s = run(base(path, x) + ["--workers", str(start), "--planner", policy] + calm + extra)[0]
            planned[(name, setting, policy)] = s

print("| workers | " + " | ".join(n for n, _, _ in TRACES) + " |")
print("|---|" + "---|" * len(TRACES))
for w in range(8):
    print(f"| {w + 1} | " + " | ".join(f"{fixed[n][w]['sla_attainment']:.3f} / {fixed[n][w]['worker_hours']:.3f}" for n, _, _ in TRACES) + " |")
print()


def claims(name, s):
    f = fixed[name]
    hours, att = s["worker_hours"], s["sla_attainment"]
    within = max([x["sla_attainment"] for x in f if x["worker_hours"] <= hours], default=0.0)
    peak = f[-1]
    ra, rh = att / max(peak["sla_attainment"], 1e-9), hours / peak["worker_hours"]
    a = f"{'met' if att >= within else 'missed'} ({within:.3f})"
    b = f"{'met' if ra >= 0.9 and rh <= 0.7 else 'missed'} ({ra:.2f}×, {rh:.2f}×)"
    return a, b


def cell(s):
    r = [p["ready"] for p in s["replicas"]]
    return f"{s['sla_attainment']:.3f} / {s['worker_hours']:.3f} ({min(r)}–{max(r)})"


print("| trace | policy | defaults | A | B | settings B | A | B |")
print("|---|---|---|---|---|---|---|---|")
for name, _, _ in TRACES:
    for i, policy in enumerate(["sla", "dynamo", "load"]):
        d, b = planned[(name, "defaults", policy)], planned[(name, "B", policy)]
        da, db = claims(name, d)
        ba, bb = claims(name, b)
        print(f"| {name if i == 0 else ''} | {policy} | {cell(d)} | {da} | {db} | {cell(b)} | {ba} | {bb} |")
print()
print("| trace | Dynamo's planner, own replay | per worker-hour | ours, defaults, start 4 | per worker-hour | A | B | ours, settings B | per worker-hour |")
print("|---|---|---|---|---|---|---|---|---|")
for name, _, _ in TRACES:
    da, dh = DYNAMO[name]
    s, b = planned[(name, "start4", "sla")], planned[(name, "B", "sla")]
    ca, cb = claims(name, s)
    print(f"| {name} | {da:.3f} / {dh:.3f} | {da / dh:.3f} | {s['sla_attainment']:.3f} / {s['worker_hours']:.3f} | "
          f"{s['sla_attainment'] / s['worker_hours']:.3f} | {ca} | {cb} | {b['sla_attainment']:.3f} / {b['worker_hours']:.3f} | "
          f"{b['sla_attainment'] / b['worker_hours']:.3f} |")
print()
print("dynamo-in-ours start4:", {n: round(planned[(n, 'start4', 'dynamo')]['sla_attainment'], 3) for n, _, _ in TRACES})
print("walls (ms):", {k[0] + "/" + k[1] + "/" + k[2]: round(v["wall_time_ms"]) for k, v in planned.items() if k[2] == "sla"})
# Disaggregated
for policy in ["sla", "dynamo", "load"]:
    s = run(["--trace", M, "--router", "kv", "--prefill-workers", "2", "--decode-workers", "2", "--planner", policy,
             "--planner-interval-s", "60", "--startup-s", "30"])[0]
    r = s["replicas"]
    print(f"disagg {policy}: {s['sla_attainment']:.3f} / {s['worker_hours']:.3f} prefill {min(p['prefill_ready'] for p in r)}–{max(p['prefill_ready'] for p in r)} decode {min(p['ready'] for p in r)}–{max(p['ready'] for p in r)}")
for p, d in [(2, 2), (4, 4)]:
    s = run(["--trace", M, "--router", "kv", "--prefill-workers", str(p), "--decode-workers", str(d)])[0]
    print(f"disagg fixed {p}+{d}: {s['sla_attainment']:.3f} / {s['worker_hours']:.3f}")
