//! The `dynamo-replay` command, run as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamo-replay"))
        .args(args)
        .output()
        .expect("dynamo-replay runs")
}

/// A Mooncake trace of `lines`, in a file of its own named after the test.
fn trace(name: &str, lines: &[&str]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("replay_cli_{name}.jsonl"));
    std::fs::write(&path, lines.join("\n")).expect("trace written");
    path
}

const TINY: [&str; 3] = [
    r#"{"timestamp": 0, "input_length": 1024, "output_length": 4, "hash_ids": [1, 2]}"#,
    r#"{"timestamp": 100, "input_length": 1024, "output_length": 8, "hash_ids": [1, 3]}"#,
    r#"{"timestamp": 250, "input_length": 600, "output_length": 2, "hash_ids": [4, 5]}"#,
];

#[test]
fn help_lists_every_flag_and_exits_0() {
    let output = replay(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).expect("utf-8");
    for flag in [
        "--trace",
        "--workers",
        "--num-gpu-blocks",
        "--block-size",
        "--trace-block-size",
        "--max-num-batched-tokens",
        "--max-num-seqs",
        "--router",
        "--timing-table",
        "--speedup",
        "--event-lag-ms",
        "--max-in-flight",
        "--seed",
        "--json",
        "--requests-out",
        "--plot",
        "--prefill-workers",
        "--decode-workers",
        "--placement",
        "--decode-router",
        "--transfer-bandwidth",
        "--transfer-latency-ms",
        "--stall-weight",
        "--handoff-router",
        "--keep-handed-over-kv",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
    for router in [
        "round-robin",
        "p2c",
        "least-loaded",
        "approx-kv",
        "approx-ttft",
    ] {
        assert!(
            help.contains(router),
            "--help does not list {router}:\n{help}"
        );
    }
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    let path = trace("bad_input", &TINY);
    let path = path.to_str().expect("utf-8 path");
    for (args, named) in [
        (vec!["--trace", path, "--no-such-flag"], "--no-such-flag"),
        (vec!["--workers", "2"], "--trace"),
        (vec!["--trace", path, "--workers", "0"], "--workers"),
        (vec!["--trace", path, "--workers", "many"], "--workers"),
        (vec!["--trace", path, "--block-size", "0"], "--block-size"),
        (vec!["--trace", path, "--speedup", "fast"], "--speedup"),
        (vec!["--trace", path, "--speedup", "-2"], "--speedup"),
        (vec!["--trace", path, "--router", "kv,nope"], "--router"),
        (vec!["--trace", path, "--seed"], "--seed"),
        (
            vec!["--trace", path, "--timing-table", "/no/such/table.json"],
            "--timing-table",
        ),
    ] {
        let output = replay(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} does not name {named}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_trace_that_cannot_be_read_exits_2() {
    let output = replay(&["--trace", "/no/such/trace.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/no/such/trace.jsonl"), "{stderr}");
}

#[test]
fn json_prints_one_summary_per_router_and_nothing_on_a_non_terminal() {
    let path = trace("json", &TINY);
    let output = replay(&[
        "--trace",
        path.to_str().expect("utf-8 path"),
        "--workers",
        "2",
        "--router",
        "round-robin, kv",
        "--router",
        "approx-ttft",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    // Standard error is a pipe here: no progress bar.
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let summaries: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    let routers: Vec<&str> = summaries
        .iter()
        .map(|s| s["router"].as_str().expect("router"))
        .collect();
    assert_eq!(routers, ["round-robin", "kv", "approx-ttft"]);
    for summary in &summaries {
        assert_eq!(summary["num_requests"], 3);
        assert_eq!(summary["completed_requests"], 3);
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_replay_quietly() {
    // `dynamo-replay ... | head -0`: the reading end is closed before anything is written.
    let path = trace("closed_pipe", &TINY);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-replay"))
        .args([
            "--trace",
            path.to_str().expect("utf-8 path"),
            "--workers",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dynamo-replay runs");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("dynamo-replay ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_json_prints_a_table_and_writes_the_records() {
    let path = trace("table", &TINY);
    let records = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay_cli_records.jsonl");
    let output = replay(&[
        "--trace",
        path.to_str().expect("utf-8 path"),
        "--router",
        "p2c",
        "--requests-out",
        records.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    assert!(
        lines
            .next()
            .is_some_and(|header| header.starts_with("router"))
    );
    assert!(lines.next().is_some_and(|row| row.starts_with("p2c")));
    let written = std::fs::read_to_string(&records).expect("records written");
    assert_eq!(written.lines().count(), 3);
}

#[test]
fn a_disaggregated_replay_reports_its_phases_per_placement() {
    let path = trace("disagg", &TINY);
    let output = replay(&[
        "--trace",
        path.to_str().expect("utf-8 path"),
        "--prefill-workers",
        "1",
        "--decode-workers",
        "2",
        "--router",
        "kv",
        "--placement",
        "always-remote,threshold",
        "--transfer-bandwidth",
        "25",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON summary"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["router"], "kv/always-remote");
    assert_eq!(lines[1]["router"], "kv/threshold");
    for line in &lines {
        assert_eq!(line["completed_requests"], 3);
        let phases = &line["disagg"];
        let placed = phases["remote_requests"].as_u64().expect("a count")
            + phases["local_requests"].as_u64().expect("a count");
        assert_eq!(placed, 3, "{line}");
    }
    assert_eq!(lines[0]["disagg"]["remote_requests"], 3);
    assert!(
        lines[0]["disagg"]["transfer"]["mean_ms"]
            .as_f64()
            .expect("ms")
            > 0.0
    );
    // The 600-token prompt is short: the threshold rule keeps it on its decode worker.
    let local = lines[1]["disagg"]["local_requests"].as_u64();
    assert!(local.is_some_and(|n| n >= 1), "{}", lines[1]);
}
