//! Replays the fuzzing corpus and every regression input of the transport's decoders
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the harnesses the fuzz
//! targets run, so that `cargo test` on stable checks that none of them panics.

#[expect(
    unreachable_pub,
    reason = "the harness is also the fuzz crate's public API"
)]
#[path = "../../fuzz/src/transport.rs"]
mod harness;

#[path = "../../fuzz/replay.rs"]
mod replay;

use replay::replay;

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
