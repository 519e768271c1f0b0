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

#[path = "../../fuzz/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn openai_request_bodies() {
    replay("openai_request", harness::openai_request);
}

#[test]
fn gguf_metadata() {
    replay("gguf_metadata", harness::gguf_metadata);
}
