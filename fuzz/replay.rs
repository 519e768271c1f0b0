//! What the stable replay tests (`dynamo-transport/tests/fuzz_corpus.rs`,
//! `dynamo-openai/tests/fuzz_corpus.rs`) share: every input kept for a fuzz target, run
//! through its harness, none of them allowed to panic. Included by path, from a crate one
//! directory below the repository's root.

use std::path::PathBuf;

/// Every input of `target` (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`), by file
/// name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    // The package folder cargo gives the running test (see `package_dir` in
    // engines/upstream/tests/support/replay.rs).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../fuzz");
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

/// Run every input of `target` through `run`; fail on the first that panics.
pub(crate) fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no corpus for {target}");
    for (name, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {name} panicked");
    }
}
