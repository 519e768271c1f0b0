//! Replays the fuzzing corpus and every regression input of the gateway's decoders (OpenAI
//! request bodies, GGUF metadata; `fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! through the harnesses the fuzz targets run, so that `cargo test` on stable checks that none
//! of them panics (nor answers a request body with a 500).

#[expect(
    unreachable_pub,
    reason = "the harness is also the fuzz crate's public API"
)]
#[path = "../../fuzz/src/openai.rs"]
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
fn openai_request_bodies() {
    replay("openai_request", harness::openai_request);
}

#[test]
fn gguf_metadata() {
    replay("gguf_metadata", harness::gguf_metadata);
}
