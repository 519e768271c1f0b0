//! KV-aware routing over vLLM's event format on the Mooncake synthetic trace
//! (`docs/simulator.md`) gives the reuse of routing on native events.
//!
//! The trace's prompts are hash ids, not tokens, and vLLM's events carry token ids from which
//! `dynamo-transport` recomputes our block hashes; so each id gets 512 made-up tokens
//! (`support/mooncake_tokens.rs`) and both runs hash those. The fleet is the replay's (8
//! mocker workers of 16,384 blocks of 64 tokens) behind the router's `WorkerSelector` on a
//! virtual clock (`support/fleet.rs`). The runs differ only in how the workers' KV events reach
//! the index: as the mocker publishes them, or written in vLLM's ZMQ layout and decoded.
//!
//! CI runs a slice of the trace (600 requests, with caches of 4,096 blocks so that they evict)
//! in a few seconds; the whole trace is `#[ignore]`d (`--release -- --ignored --nocapture`).
//! Not covered here: the ZMQ socket itself (lag, loss and replay are tested in
//! `dynamo-transport`), and a live engine.

#![cfg(feature = "events")]

use std::time::Instant;

use dynamo_core::BlockHasher;
use dynamo_mocker::{CacheKnowledge, EngineConfig, Replay, ReplayConfig, TraceRequest};
use dynamo_router::{ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, Router, SharedIndex};

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/mooncake_tokens.rs"]
mod mooncake_tokens;
#[path = "support/vllm_wire.rs"]
mod vllm_wire;

use fleet::{Events, Outcome, Prompts};
use mooncake_tokens::{TRACE_BLOCK, load_trace, prompt};

/// The replay's fleet for this trace (`docs/simulator.md`).
const WORKERS: usize = 8;
/// A part of the trace, for CI in a debug build.
const SLICE: std::ops::Range<usize> = 3000..3600;
/// A smaller cache than the replay's, so that the slice evicts.
const SLICE_BLOCKS: u64 = 4096;

/// `dynamo-replay --router kv`'s policy (seed 0).
fn kv() -> KvCost {
    KvCost::new(KvCostConfig {
        seed: Some(0),
        ..KvCostConfig::default()
    })
}

/// `dynamo-replay --router ttft`'s policy (seed 0, told the workers' KV capacity).
fn ttft(engine: &EngineConfig) -> ExpectedTtft {
    ExpectedTtft::new(ExpectedTtftConfig {
        seed: Some(0),
        kv_capacity_blocks: Some(engine.num_gpu_blocks),
        ..ExpectedTtftConfig::default()
    })
}

/// The full blocks two prompts share, by our hashes of their made-up tokens.
fn shared_blocks(a: &[dynamo_core::SequenceHash], b: &[dynamo_core::SequenceHash]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The full blocks two requests should share: those of their common leading hash ids that
/// both prompts fill.
fn expected_shared(a: &TraceRequest, b: &TraceRequest, block_size: usize) -> usize {
    let common_ids = a
        .hash_ids
        .iter()
        .zip(&b.hash_ids)
        .take_while(|(x, y)| x == y)
        .count();
    let full = |r: &TraceRequest| r.input_length as usize / block_size;
    (common_ids * TRACE_BLOCK / block_size)
        .min(full(a))
        .min(full(b))
}

#[test]
fn made_up_prompts_share_a_block_exactly_where_their_hash_ids_do() {
    let engine = EngineConfig::default();
    let hasher = BlockHasher::new(engine.block_size);
    let block = engine.block_size.as_usize();
    let request = |input_length, hash_ids: &[u64]| TraceRequest {
        timestamp: 0.0,
        input_length,
        output_length: 1,
        hash_ids: hash_ids.to_vec(),
    };
    // A's last id is partial (188 tokens: 2 full blocks of 64), and B holds it whole; C leaves
    // them after the first id; D shares nothing.
    let a = request(700, &[1, 2]);
    let b = request(1500, &[1, 2, 3]);
    let c = request(1024, &[1, 4]);
    let d = request(500, &[5]);
    let hashes = |r: &TraceRequest| hasher.sequence_hashes(&prompt(r));
    assert_eq!(prompt(&a).len(), 700);
    assert_eq!(shared_blocks(&hashes(&a), &hashes(&b)), 10);
    assert_eq!(shared_blocks(&hashes(&a), &hashes(&c)), 8);
    assert_eq!(shared_blocks(&hashes(&b), &hashes(&c)), 8);
    assert_eq!(shared_blocks(&hashes(&a), &hashes(&d)), 0);
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c), (&a, &d)] {
        assert_eq!(
            shared_blocks(&hashes(x), &hashes(y)),
            expected_shared(x, y, block)
        );
    }

    // Every pair of the slice the CI run serves.
    let trace = load_trace();
    let slice = &trace[SLICE];
    let hashed: Vec<_> = slice.iter().map(hashes).collect();
    let mut sharing = 0;
    for i in 0..slice.len() {
        assert_eq!(
            hashed[i].len(),
            slice[i].input_length as usize / block,
            "request {i}: every full block is hashed"
        );
        for j in i + 1..slice.len() {
            let expected = expected_shared(&slice[i], &slice[j], block);
            assert_eq!(
                shared_blocks(&hashed[i], &hashed[j]),
                expected,
                "requests {i} and {j}"
            );
            sharing += usize::from(expected > 0);
        }
    }
    assert!(sharing > 100, "the slice shares prefixes: {sharing} pairs");
}

/// Native and vLLM-format runs of `trace` under `policy`, and how long each took.
fn both(
    trace: &[TraceRequest],
    engine: EngineConfig,
    policy: impl Fn() -> Box<dyn Router>,
) -> (Outcome, Outcome) {
    let started = Instant::now();
    let native = fleet::run(
        trace,
        WORKERS,
        engine,
        policy(),
        Prompts::Tokens,
        Events::Native,
    );
    let native_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let vllm = fleet::run(
        trace,
        WORKERS,
        engine,
        policy(),
        Prompts::Tokens,
        Events::Vllm,
    );
    let vllm_s = started.elapsed().as_secs_f64();
    let same = native
        .workers
        .iter()
        .zip(&vllm.workers)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "{} requests: native {:.4} ({} blocks evicted, {native_s:.1} s), vLLM's format {:.4} \
         ({} evicted, {vllm_s:.1} s), difference {:+.2}%, same worker for {same}",
        trace.len(),
        native.reuse,
        native.evicted_blocks,
        vllm.reuse,
        vllm.evicted_blocks,
        100.0 * (vllm.reuse - native.reuse) / native.reuse,
    );
    (native, vllm)
}

fn assert_agree(native: &Outcome, vllm: &Outcome) {
    assert!(
        native.reuse > 0.2,
        "the trace shares prefixes: {}",
        native.reuse
    );
    assert!(
        (vllm.reuse - native.reuse).abs() <= 0.02 * native.reuse,
        "native events {:.4}, vLLM's format {:.4}",
        native.reuse,
        vllm.reuse
    );
}

#[test]
fn a_slice_of_the_mooncake_trace_reuses_as_much_over_vllm_events_as_over_native_ones() {
    let trace = load_trace();
    let slice = &trace[SLICE];
    let engine = EngineConfig {
        num_gpu_blocks: SLICE_BLOCKS,
        ..EngineConfig::default()
    };
    let (native, vllm) = both(slice, engine, || Box::new(kv()));
    assert!(native.evicted_blocks > 0, "the slice's caches fill up");
    assert_agree(&native, &vllm);
}

#[test]
fn the_fleet_routes_as_the_replay_does() {
    // The CI slice and caches, with the replay's own block hashes and native events: the
    // same worker for every request, and the same reuse, so the comparison runs on the
    // replay's fleet.
    let trace = load_trace();
    let slice = &trace[SLICE];
    let config = ReplayConfig {
        workers: WORKERS,
        engine: EngineConfig {
            num_gpu_blocks: SLICE_BLOCKS,
            ..EngineConfig::default()
        },
        ..ReplayConfig::default()
    };
    let replay = Replay::new(slice, &config)
        .label("kv")
        .policy(kv())
        .knowledge(CacheKnowledge::Events(SharedIndex::new(
            config.engine.block_size,
        )))
        .run()
        .expect("the replay runs");
    let ours = fleet::run(
        slice,
        WORKERS,
        config.engine,
        kv(),
        Prompts::TraceIds,
        Events::Native,
    );
    let replay_workers: Vec<u64> = replay.records.iter().map(|r| r.worker).collect();
    assert_eq!(ours.workers, replay_workers);
    assert_eq!(ours.reuse, replay.summary.prefix_cache_reused_ratio);
}

/// The whole trace with the replay's fleet, under `kv` and `ttft`:
/// `cargo test --release -p dynamo-vllm --features events --test kv_reuse_mooncake -- --ignored --nocapture`.
#[test]
#[ignore = "the whole trace: run with --release"]
fn the_whole_mooncake_trace_reuses_as_much_over_vllm_events_as_over_native_ones() {
    let trace = load_trace();
    let engine = EngineConfig::default();
    let ids = fleet::run(
        &trace,
        WORKERS,
        engine,
        kv(),
        Prompts::TraceIds,
        Events::Native,
    );
    println!("kv with the replay's block hashes: {:.4}", ids.reuse);
    println!("kv:");
    let (native, vllm) = both(&trace, engine, || Box::new(kv()));
    assert_agree(&native, &vllm);
    println!("ttft:");
    let (native, vllm) = both(&trace, engine, || Box::new(ttft(&engine)));
    assert_agree(&native, &vllm);
}
