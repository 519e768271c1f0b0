//! `dynamo-replay --planner`, `--fixed-sweep` and `profile`, run as a user runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamo-replay"))
        .args(args)
        .output()
        .expect("dynamo-replay runs")
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("replay_cli_planner_{name}"))
}

/// An Azure CSV trace: 2 requests a second for 30 s, 20 a second for 30 s, 2 a second for 60 s.
fn azure_trace(name: &str) -> PathBuf {
    let mut text = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    let mut t = 0.0f64;
    while t < 120.0 {
        let rate = if (30.0..60.0).contains(&t) { 20.0 } else { 2.0 };
        let (m, s) = ((t / 60.0).floor(), t % 60.0);
        text.push_str(&format!(
            "2023-11-16 18:{:02}:{s:010.7},2048,16\n",
            17 + m as u32
        ));
        t += 1.0 / rate;
    }
    let path = tmp(&format!("{name}.csv"));
    std::fs::write(&path, text).expect("trace written");
    path
}

/// The `sla` planner on short steps, with the fixed pools of up to 3 workers beside it.
const SLA_BESIDE_THE_SWEEP: [&str; 9] = [
    "--planner",
    "sla",
    "--planner-interval-s",
    "10",
    "--startup-s",
    "5",
    "--max-workers",
    "3",
    "--fixed-sweep",
];

fn summaries(output: &Output) -> Vec<serde_json::Value> {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON summary"))
        .collect()
}

#[test]
fn a_planner_replay_reports_its_timeline_beside_the_fixed_pools() {
    let trace = azure_trace("sweep");
    let plots = tmp("plots");
    let output = replay(&[
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--router",
        "round-robin",
        "--planner",
        "load",
        "--planner-interval-s",
        "10",
        "--startup-s",
        "5",
        "--max-workers",
        "3",
        "--workers",
        "1",
        "--fixed-sweep",
        "--json",
        "--plot",
        plots.to_str().expect("utf-8 path"),
    ]);
    let lines = summaries(&output);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let planned = &lines[0];
    assert_eq!(planned["router"], "round-robin+load");
    assert_eq!(planned["completed_requests"], planned["num_requests"]);
    assert!(planned["replicas"].as_array().is_some_and(|r| r.len() > 2));
    // Each planning step (a point with a reason) names the rule that set the pool's size.
    for point in planned["replicas"].as_array().into_iter().flatten() {
        let rules = point["rules"].as_array().cloned().unwrap_or_default();
        if point.get("reason").is_some() {
            assert_eq!(rules.len(), 1, "{point}");
            assert_eq!(rules[0]["pool"], "aggregated", "{point}");
            assert!(rules[0]["rule"].is_string(), "{point}");
        } else {
            assert!(rules.is_empty(), "{point}");
        }
    }
    assert!(planned["sla_attainment"].as_f64().is_some());
    for (i, fixed) in lines[1..].iter().enumerate() {
        assert_eq!(fixed["router"], format!("round-robin fixed {}", i + 1));
        assert_eq!(fixed["workers"], i + 1);
        assert!(fixed["frontier"].is_boolean());
        assert!(fixed.get("replicas").is_none());
        assert!(fixed["worker_hours"].as_f64().is_some_and(|h| h > 0.0));
    }
    for file in ["replicas.svg", "frontier.svg", "ttft_cdf.svg"] {
        let svg = std::fs::read_to_string(plots.join(file)).expect("a plot");
        assert!(svg.starts_with("<svg"), "{file}");
    }
}

#[test]
fn without_json_the_frontier_is_a_table_with_the_claims() {
    let trace = azure_trace("table");
    let mut args = vec![
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--router",
        "round-robin",
    ];
    args.extend(SLA_BESIDE_THE_SWEEP);
    let output = replay(&args);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for text in [
        "fixed 1",
        "fixed 2",
        "round-robin+sla",
        "worker_hours",
        "gpu_hours",
        "attainment",
    ] {
        assert!(stdout.contains(text), "{text} missing:\n{stdout}");
    }
}

/// Whether no other point has at least `p`'s attainment with no more GPU-hours, and beats
/// it on one of the two.
fn undominated(p: (f64, f64), all: &[(f64, f64)]) -> bool {
    !all.iter()
        .any(|&(a, h)| a >= p.0 && h <= p.1 && (a > p.0 || h < p.1))
}

#[test]
fn a_disaggregated_sweep_replays_every_split_within_the_budget() {
    let trace = azure_trace("disagg_sweep");
    let plots = tmp("disagg_plots");
    let args = |json: bool| {
        let mut args = vec![
            "--trace",
            trace.to_str().expect("utf-8 path"),
            "--router",
            "kv",
            "--prefill-workers",
            "1",
            "--decode-workers",
            "1",
        ];
        args.extend(SLA_BESIDE_THE_SWEEP);
        if json {
            args.extend(["--json", "--plot", plots.to_str().expect("utf-8 path")]);
        }
        replay(&args)
    };
    let lines = summaries(&args(true));
    // The planner's run, then every split of 2 and of 3 workers.
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["router"], "kv/always-remote+sla");
    let fixed = &lines[1..];
    let splits: Vec<(u64, u64)> = fixed
        .iter()
        .map(|f| {
            let p = f["prefill_workers"].as_u64().expect("prefill workers");
            let d = f["decode_workers"].as_u64().expect("decode workers");
            assert_eq!(f["router"], format!("kv/always-remote fixed {p}+{d}"));
            assert!(f["disagg"].is_object(), "{f}");
            assert_eq!(f["completed_requests"], f["num_requests"]);
            (p, d)
        })
        .collect();
    assert_eq!(splits, [(1, 1), (1, 2), (2, 1)]);
    let points: Vec<(f64, f64)> = fixed
        .iter()
        .map(|f| {
            let attainment = f["sla_attainment"].as_f64().expect("attainment");
            (attainment, f["gpu_hours"].as_f64().expect("GPU-hours"))
        })
        .collect();
    for (f, &point) in fixed.iter().zip(&points) {
        assert_eq!(f["frontier"], undominated(point, &points), "{f}");
    }
    // The smallest deployment is on the frontier: nothing costs less.
    assert_eq!(fixed[0]["frontier"], true);
    let svg = std::fs::read_to_string(plots.join("frontier.svg")).expect("a plot");
    for label in ["1+1", "1+2", "2+1", "kv/always-remote+sla"] {
        assert!(
            svg.contains(&format!(">{label}<")),
            "{label} missing from the plot"
        );
    }

    // Without --json: a row per split, the frontier, and the claims against the best split of
    // the most workers.
    let output = args(false);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for (f, (p, d)) in fixed.iter().zip(&splits) {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("fixed {p}+{d} ")))
            .unwrap_or_else(|| panic!("no row for {p}+{d}:\n{stdout}"));
        assert_eq!(row.ends_with('*'), f["frontier"] == true, "{row}");
    }
    // The planner's row in the frontier table gives its prefill and decode pools' ranges.
    let frontier_table = stdout
        .split_once("frontier\n")
        .map(|(_, rest)| rest)
        .expect("the frontier table");
    let planner_row = frontier_table
        .lines()
        .find(|l| l.starts_with("kv/always-remote+sla "))
        .expect("the planner's row");
    let workers = planner_row.split_whitespace().nth(1).unwrap_or_default();
    let pools: Vec<&str> = workers.split('+').collect();
    assert!(
        pools.len() == 2 && pools.iter().all(|p| p.contains('-')),
        "the planner's prefill+decode ranges: {planner_row}"
    );
    let frontier = stdout
        .lines()
        .find(|l| l.starts_with("frontier"))
        .expect("the frontier line");
    assert!(frontier.contains("1+1"), "{frontier}");
    let claims = stdout
        .lines()
        .find(|l| l.starts_with("kv/always-remote+sla: attainment"))
        .expect("the claims line");
    assert!(claims.contains("(the best split of 3 GPUs)"), "{claims}");
}

#[test]
fn workers_of_several_gpus_count_against_the_budget_and_in_gpu_hours() {
    let trace = azure_trace("gpus");
    let path = trace.to_str().expect("utf-8 path");
    let mut planner = vec!["--router", "kv", "--json"];
    planner.extend(SLA_BESIDE_THE_SWEEP);
    let one_and_one = [
        "--trace",
        path,
        "--prefill-workers",
        "1",
        "--decode-workers",
        "1",
    ];
    // Aggregated workers of 2 GPUs each, 5 GPUs in all: the sweep stops at 2 workers and
    // every hour of a worker is 2 GPU-hours.
    let mut args = vec!["--trace", path, "--worker-gpus", "2", "--budget", "5"];
    args.extend(&planner);
    let lines = summaries(&replay(&args));
    let sizes: Vec<u64> = lines[1..]
        .iter()
        .map(|f| f["workers"].as_u64().expect("workers"))
        .collect();
    assert_eq!(sizes, [1, 2]);
    for line in &lines {
        let workers = line["worker_hours"].as_f64().expect("worker-hours");
        let gpus = line["gpu_hours"].as_f64().expect("GPU-hours");
        assert!((gpus - 2.0 * workers).abs() < 1e-9, "{line}");
    }
    let most_desired = |line: &serde_json::Value, key: &str| {
        let points = line["replicas"].as_array().expect("a timeline");
        points.iter().filter_map(|p| p[key].as_u64()).max()
    };
    assert_eq!(most_desired(&lines[0], "desired"), Some(2), "{}", lines[0]);

    // Decode workers of 2 GPUs, prefill workers of 1, 5 GPUs in all: every split that fits,
    // by GPUs; a decode worker's hour is 2 GPU-hours, a prefill worker's 1.
    let mut args = one_and_one.to_vec();
    args.extend(["--decode-gpus", "2", "--budget", "5"]);
    args.extend(&planner);
    let lines = summaries(&replay(&args));
    let splits: Vec<(u64, u64)> = lines[1..]
        .iter()
        .map(|f| {
            let p = f["prefill_workers"].as_u64().expect("prefill workers");
            let d = f["decode_workers"].as_u64().expect("decode workers");
            let workers = f["worker_hours"].as_f64().expect("worker-hours");
            let gpus = f["gpu_hours"].as_f64().expect("GPU-hours");
            // Every worker of a fixed pool lives the whole replay.
            let each = workers / (p + d) as f64;
            assert!((gpus - each * (p + 2 * d) as f64).abs() < 1e-9, "{f}");
            (p, d)
        })
        .collect();
    assert_eq!(splits, [(1, 1), (2, 1), (1, 2), (3, 1)]);
    let timeline = lines[0]["replicas"].as_array().expect("a timeline");
    for point in timeline {
        let prefill = point["prefill_desired"].as_u64().expect("prefill workers");
        let decode = point["desired"].as_u64().expect("decode workers");
        assert!(prefill + 2 * decode <= 5, "over the budget: {point}");
    }

    // A role's GPUs only where the replay has that role.
    for flags in [
        ["--decode-gpus", "2"],
        ["--prefill-gpus", "2"],
        ["--worker-gpus", "0"],
    ] {
        let mut args = vec!["--trace", path];
        args.extend(flags);
        assert_eq!(replay(&args).status.code(), Some(2), "{flags:?}");
    }
    let both = replay(&[one_and_one.as_slice(), &["--worker-gpus", "2"]].concat());
    assert_eq!(both.status.code(), Some(2));

    // One prefill worker and one decode worker of four GPUs need 5: a budget of 4 is refused,
    // for a planner run and for a sweep alike, rather than overspent.
    for run in [["--planner", "sla"], ["--planner", "none"]] {
        let mut args = one_and_one.to_vec();
        args.extend(["--decode-gpus", "4", "--budget", "4", "--fixed-sweep"]);
        args.extend(run);
        let refused = replay(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_ne!(refused.status.code(), Some(0), "{run:?}");
        assert!(
            stderr.contains("below the 5 GPUs of the least pools"),
            "{run:?}: {stderr}"
        );
    }
}

#[test]
fn profile_writes_a_profile_the_planner_reads() {
    let out = tmp("profile.json");
    let output = replay(&[
        "--num-gpu-blocks",
        "4096",
        "profile",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let profile = dynamo_planner::perf::PerfProfile::from_json_file(&out).expect("a profile");
    assert_eq!(profile.engine(), Some("dynamo-mocker"));
    assert_eq!(profile.prefill().len(), 8);
    // A smaller cache holds fewer large batches.
    assert!(profile.decode().iter().all(|p| p.kv_usage <= 1.0));
    assert!(!profile.decode().is_empty());
}

#[test]
fn a_planner_with_bad_bounds_or_settings_exits_2() {
    let trace = azure_trace("refused");
    let path = trace.to_str().expect("utf-8 path");
    for extra in [
        &[
            "--planner",
            "load",
            "--min-workers",
            "4",
            "--max-workers",
            "2",
        ][..],
        &["--planner", "sla", "--sla-config", r#"{"calm_s": "long"}"#][..],
    ] {
        let mut args = vec!["--trace", path];
        args.extend_from_slice(extra);
        let output = replay(&args);
        assert_eq!(output.status.code(), Some(2), "{extra:?}");
        assert!(!output.stderr.is_empty());
    }
    // Settings it knows are taken.
    let output = replay(&[
        "--trace",
        path,
        "--planner",
        "sla",
        "--planner-interval-s",
        "10",
        "--sla-config",
        r#"{"calm_s": 20, "utilisation": 0.5}"#,
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_disaggregated_planner_replay_sizes_both_pools() {
    let trace = azure_trace("disagg");
    let output = replay(&[
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--router",
        "kv",
        "--prefill-workers",
        "1",
        "--decode-workers",
        "1",
        "--planner",
        "sla",
        "--planner-interval-s",
        "10",
        "--startup-s",
        "5",
        "--max-workers",
        "4",
        "--json",
    ]);
    let lines = summaries(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let run = &lines[0];
    assert_eq!(run["router"], "kv/always-remote+sla");
    assert_eq!(run["completed_requests"], run["num_requests"]);
    let timeline = run["replicas"].as_array().expect("a timeline");
    assert!(
        timeline
            .iter()
            .all(|p| p["prefill_ready"].as_u64().is_some())
    );
    assert!(run["disagg"].is_object());
}
