//! Replays the fuzzing corpus and every regression input of the transport's decoders
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the harnesses the fuzz
//! targets run, so that `cargo test` on stable checks that none of them panics.

#[expect(
    unreachable_pub,
    reason = "the harness is also the fuzz crate's public API"
)]
#[path = "../../fuzz/src/transport.rs"]
mod harness;

use std::path::Path;

/// Every input of `target`, by file name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("a readable input");
                inputs.push((path.display().to_string(), bytes));
            }
        }
    }
    inputs.sort();
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no corpus for {target}");
    for (name, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {name} panicked");
    }
}

#[test]
fn request_frames() {
    replay("request_frame", harness::request_frame);
}

#[test]
fn engine_events() {
    replay("engine_events", harness::engine_events);
}

#[test]
fn nats_payloads() {
    replay("nats_payload", harness::nats_payload);
}

#[test]
fn discovery_records() {
    replay("discovery_record", harness::discovery_record);
}
