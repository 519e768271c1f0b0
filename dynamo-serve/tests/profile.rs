//! `dynamo-serve profile` as a user runs it: it measures one worker's engine and writes a
//! profile that `dynamo-serve planner --profile` reads.

use std::process::Command;

use dynamo_planner::perf::PerfProfile;

#[test]
fn the_profile_command_writes_the_tables_of_the_engine_it_measured() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-profile-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let out = directory.join("mocker.json");
    let run = Command::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(["profile", "--engine", "mocker", "--out"])
        .arg(&out)
        .args(["--input-tokens", "64,1024", "--context-tokens", "256"])
        .args([
            "--concurrency",
            "1,8",
            "--decode-steps",
            "4",
            "--kv-blocks",
            "512",
        ])
        .output()
        .expect("dynamo-serve runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("wrote 2 prefill and 3 decode points"),
        "{stdout}"
    );

    let profile = PerfProfile::from_json_file(&out).expect("a profile the planner reads");
    assert_eq!(profile.engine(), Some("simulated (mocker)"));
    let prefill = profile.prefill();
    assert_eq!(
        (prefill[0].input_tokens, prefill[1].input_tokens),
        (64, 1024)
    );
    // A longer prompt takes longer to compute.
    assert!(prefill[1].ttft_ms > prefill[0].ttft_ms, "{prefill:?}");
    let decode = profile.decode();
    // The row ends at the largest batch the cache holds: 260 tokens take 17 blocks of 16, and
    // 512 blocks hold 30 such requests.
    let batches: Vec<u32> = decode.iter().map(|point| point.concurrency).collect();
    assert_eq!(batches, [1, 8, 30]);
    // A larger batch decodes more tokens a second, and holds more blocks: the last nearly all.
    for pair in decode.windows(2) {
        assert!(pair[1].tokens_per_s > pair[0].tokens_per_s, "{decode:?}");
        assert!(pair[1].kv_usage > pair[0].kv_usage, "{decode:?}");
    }
    assert!(decode[2].kv_usage > 0.9, "{decode:?}");
}

/// With `--max-running 12` the engine runs 12 requests at once, and the decode row ends
/// there, though the cache holds 30.
#[test]
fn a_decode_row_ends_at_the_requests_a_worker_runs_at_once() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-profile-")
        .tempdir()
        .expect("a temporary directory");
    let out = temporary.path().join("mocker.json");
    let run = Command::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(["profile", "--engine", "mocker", "--out"])
        .arg(&out)
        .args(["--input-tokens", "64", "--context-tokens", "256"])
        .args(["--concurrency", "1,8", "--decode-steps", "4"])
        .args(["--kv-blocks", "512", "--max-running", "12"])
        .output()
        .expect("dynamo-serve runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let profile = PerfProfile::from_json_file(&out).expect("a profile the planner reads");
    let batches: Vec<u32> = profile.decode().iter().map(|p| p.concurrency).collect();
    assert_eq!(batches, [1, 8, 12]);
}
