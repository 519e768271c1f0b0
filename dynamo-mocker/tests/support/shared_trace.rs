//! Where the replay tests find the shared Mooncake trace.

use std::path::PathBuf;

/// `../shared/traces/mooncake-fast25/synthetic_trace.jsonl` beside the repository, from the
/// package folder cargo gives the running test (see `package_dir` in
/// `engines/upstream/tests/support/replay.rs`).
pub(crate) fn mooncake_trace_path() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../shared/traces/mooncake-fast25/synthetic_trace.jsonl")
}
