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
    assert!(planned["sla_attainment"].as_f64().is_some());
    for (i, fixed) in lines[1..].iter().enumerate() {
        assert_eq!(fixed["router"], format!("round-robin fixed {}", i + 1));
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
    let output = replay(&[
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--router",
        "round-robin",
        "--planner",
        "sla",
        "--planner-interval-s",
        "10",
        "--startup-s",
        "5",
        "--max-workers",
        "2",
        "--fixed-sweep",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for text in [
        "fixed 1",
        "fixed 2",
        "round-robin+sla",
        "worker_hours",
        "attainment",
    ] {
        assert!(stdout.contains(text), "{text} missing:\n{stdout}");
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
