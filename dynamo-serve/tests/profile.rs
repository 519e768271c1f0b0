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
        stdout.contains("wrote 2 prefill and 2 decode points"),
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
    assert_eq!((decode[0].concurrency, decode[1].concurrency), (1, 8));
    // A batch of eight decodes more tokens a second than one request, and holds more blocks.
    assert!(
        decode[1].tokens_per_s > decode[0].tokens_per_s,
        "{decode:?}"
    );
    assert!(decode[1].kv_usage > decode[0].kv_usage, "{decode:?}");
}
