//! Token ids made up for the Mooncake trace, whose prompts are hash ids of 512-token blocks:
//! each id's tokens are drawn from a generator keyed by the id, so equal ids give equal
//! tokens and different ids different ones, and a request's last id, which may be partial,
//! gives the first tokens of its block (the prompt is `input_length` long).

use std::path::PathBuf;

use dynamo_core::SequenceHash;
use dynamo_mocker::{TraceRequest, load_mooncake};

/// Tokens per hash id.
pub(crate) const TRACE_BLOCK: usize = 512;

/// Prompt tokens are below this (a Llama 3 sized vocabulary); the stand-ins for output blocks
/// are at or above it, so the two never meet.
const VOCABULARY: u64 = 128_256;

/// The shared Mooncake synthetic trace (`docs/simulator.md`).
pub(crate) fn load_trace() -> Vec<TraceRequest> {
    // The package folder cargo gives the running test (see `package_dir` in
    // engines/upstream/tests/support/replay.rs).
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../../shared/traces/mooncake-fast25/synthetic_trace.jsonl");
    load_mooncake(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// splitmix64's output function: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Token `position` (below [`TRACE_BLOCK`]) of hash id `id`.
pub(crate) fn token(id: u64, position: usize) -> u32 {
    (mix(mix(id).wrapping_add(position as u64)) % VOCABULARY) as u32
}

/// The prompt of `request`: its hash ids' tokens, cut at `input_length`.
///
/// # Panics
///
/// If the hash ids cover fewer than `input_length` tokens (no request of the shared trace).
pub(crate) fn prompt(request: &TraceRequest) -> Vec<u32> {
    let length = request.input_length as usize;
    assert!(
        length <= request.hash_ids.len() * TRACE_BLOCK,
        "{length} tokens need more than {} hash ids",
        request.hash_ids.len()
    );
    let mut tokens = Vec::with_capacity(length);
    for &id in &request.hash_ids {
        let take = (length - tokens.len()).min(TRACE_BLOCK);
        tokens.extend((0..take).map(|position| token(id, position)));
    }
    tokens
}

/// Stand-in token ids for a block the engine filled with a request's output (the mocker
/// names it by a hash of the request's own): keyed by that hash, outside the prompts'
/// vocabulary.
pub(crate) fn output_block(hash: &SequenceHash, block_size: usize) -> Vec<u32> {
    let key = mix(hash.0 ^ 0x6f75_7470_7574);
    (0..block_size)
        .map(|position| {
            let drawn = mix(key.wrapping_add(position as u64)) % (u64::from(u32::MAX) - VOCABULARY);
            (VOCABULARY + drawn) as u32
        })
        .collect()
}
