//! The simulated worker's conservation properties, under random workloads on small caches
//! that force eviction and preemption, and hand-computed single-request scenarios.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::collections::HashMap;

use dynamo_core::{BlockHasher, BlockSize, KvEventData, StorageTier};
use dynamo_mocker::{
    EngineConfig, HandedOverKv, HostTierConfig, LowerTierHit, PolynomialTiming, SimRequest,
    SimWorker, StepReport, StepShape, StepTiming,
};
use proptest::prelude::*;

const BLOCK: u32 = 4;

fn config(blocks: u64, budget: u64, seqs: usize) -> EngineConfig {
    EngineConfig {
        num_gpu_blocks: blocks,
        block_size: BlockSize::new(BLOCK).unwrap(),
        max_num_batched_tokens: budget,
        max_num_seqs: seqs,
        host: None,
        disk: None,
    }
}

/// A request whose prompt is `shared` tokens common to all requests and then its own.
fn request(id: u64, shared: u32, own: u32, output: u64) -> SimRequest {
    let mut tokens: Vec<u32> = (0..shared).collect();
    tokens.extend((0..own).map(|i| 1_000 + id as u32 * 100 + i));
    SimRequest {
        id,
        prompt_blocks: BlockHasher::new(BlockSize::new(BLOCK).unwrap()).hash_blocks(&tokens),
        prompt_tokens: tokens.len() as u64,
        output_tokens: output,
    }
}

#[derive(Debug, Clone)]
struct Arrival {
    after_steps: usize,
    shared: u32,
    own: u32,
    output: u64,
    /// Its prompt's KV computed elsewhere and handed over.
    transferred: bool,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0usize..3,
        0u32..24,
        1u32..24,
        1u64..12,
        prop::bool::weighted(0.3),
    )
        .prop_map(|(after_steps, shared, own, output, transferred)| Arrival {
            after_steps,
            shared,
            own,
            output,
            transferred,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_request_completes_once_with_its_tokens_and_blocks_stay_within_capacity(
        arrivals in prop::collection::vec(arrival(), 1..24),
        blocks in 12u64..40,
        budget in 4u64..32,
        seqs in 1usize..6,
    ) {
        let mut worker = SimWorker::new(config(blocks, budget, seqs), PolynomialTiming::default())
            .record_tokens(true);
        let mut produced: HashMap<u64, u64> = HashMap::new();
        let mut first: HashMap<u64, usize> = HashMap::new();
        let mut finished: HashMap<u64, usize> = HashMap::new();
        let mut registered: i64 = 0;
        let requests: Vec<SimRequest> = arrivals
            .iter()
            .enumerate()
            .map(|(i, a)| request(i as u64, a.shared, a.own, a.output))
            .collect();
        let mut pending = arrivals.iter().zip(&requests).peekable();
        let mut step = 0;
        loop {
            while let Some((a, r)) = pending.peek() {
                if a.after_steps > step % 3 && !worker.is_idle() {
                    break;
                }
                if a.transferred {
                    // Odd ids keep the handed-over blocks cached, even ones free them.
                    let kv = if r.id % 2 == 1 { HandedOverKv::Cached } else { HandedOverKv::Discarded };
                    worker.add_transferred_request((*r).clone(), kv);
                } else {
                    worker.add_request((*r).clone());
                }
                pending.next();
            }
            let Some(report) = worker.step() else {
                if pending.peek().is_none() {
                    break;
                }
                continue;
            };
            step += 1;
            prop_assert!(step < 10_000, "the worker makes progress");
            let metrics = worker.metrics();
            prop_assert!(metrics.blocks_in_use <= metrics.blocks_total);
            prop_assert!(report.duration_ms > 0.0 || report.first_tokens.is_empty() && !report.finished.is_empty(), "only a rejection takes no time");
            for id in &report.produced {
                *produced.entry(*id).or_default() += 1;
            }
            for id in &report.first_tokens {
                prop_assert!(first.insert(*id, step).is_none(), "one first token per request");
            }
            for id in &report.finished {
                prop_assert!(finished.insert(*id, step).is_none(), "finished once");
            }
            for event in &report.events {
                match event {
                    KvEventData::Stored { blocks, .. } => registered += blocks.len() as i64,
                    KvEventData::Removed { blocks } => registered -= blocks.len() as i64,
                    _ => {}
                }
            }
            prop_assert!(registered >= 0 && registered <= blocks as i64, "events describe a cache within capacity");
        }
        prop_assert_eq!(finished.len(), requests.len());
        for r in &requests {
            // A request larger than the whole cache is dropped unserved; every other one
            // produces exactly its output tokens, the first before or at its finish.
            let needs = (r.prompt_tokens + r.output_tokens).div_ceil(u64::from(BLOCK));
            if needs <= blocks {
                prop_assert_eq!(produced.get(&r.id).copied(), Some(r.output_tokens), "request {}", r.id);
                prop_assert!(first[&r.id] <= finished[&r.id]);
            }
        }
        for (id, cached) in worker.drain_cache_hits() {
            prop_assert!(cached < requests[id as usize].prompt_tokens, "at least one prompt token is computed");
            prop_assert!(!arrivals[id as usize].transferred, "a handed-over prompt reports no hit");
        }
    }
}

#[test]
fn one_request_alone_takes_the_timing_models_prefill_then_decode_steps() {
    let engine = EngineConfig::default();
    let timing = PolynomialTiming::default();
    let mut worker = SimWorker::new(engine, timing);
    let prompt: Vec<u32> = (0..1000).collect();
    worker.add_request(SimRequest {
        id: 7,
        prompt_blocks: BlockHasher::new(engine.block_size).hash_blocks(&prompt),
        prompt_tokens: 1000,
        output_tokens: 3,
    });
    let first = worker.step().unwrap();
    let prefill = StepShape {
        prefill_tokens: 1000,
        decode_sequences: 0,
        kv_usage: 0.0,
    };
    assert_eq!(first.first_tokens, [7]);
    assert!(
        (first.duration_ms - timing.step_ms(&prefill)).abs() < 1e-9,
        "TTFT is the prefill time"
    );
    let second = worker.step().unwrap();
    let decode = StepShape {
        prefill_tokens: 0,
        decode_sequences: 1,
        kv_usage: 1001.0 / (16_384.0 * 64.0),
    };
    assert!((second.duration_ms - timing.step_ms(&decode)).abs() < 1e-9);
    assert!(second.finished.is_empty());
    assert_eq!(worker.step().unwrap().finished, [7]);
    assert!(worker.step().is_none());
}

#[test]
fn a_repeated_prompt_reuses_its_cached_blocks_but_computes_its_last_one() {
    let engine = EngineConfig::default();
    let mut worker = SimWorker::new(engine, PolynomialTiming::default());
    let prompt: Vec<u32> = (0..1024).collect();
    let blocks = BlockHasher::new(engine.block_size).hash_blocks(&prompt);
    for id in 0..2 {
        worker.add_request(SimRequest {
            id,
            prompt_blocks: blocks.clone(),
            prompt_tokens: 1024,
            output_tokens: 1,
        });
        while worker.step().is_some() {}
    }
    assert_eq!(worker.drain_cache_hits(), [(0, 0), (1, 960)]);
}

#[test]
fn a_prefix_evicted_from_the_device_is_onboarded_from_the_host_tier_in_copy_time() {
    let host = HostTierConfig {
        blocks: 64,
        ..HostTierConfig::default()
    };
    let engine = EngineConfig {
        num_gpu_blocks: 20,
        host: Some(host),
        ..EngineConfig::default()
    };
    let mut worker = SimWorker::new(engine, PolynomialTiming::default());
    let hasher = BlockHasher::new(engine.block_size);
    let prompt = |offset: u32| -> Vec<u32> { (offset..offset + 1024).collect() };
    /// Run one request to its end on the worker's clock; the host tier's events.
    fn run(
        worker: &mut SimWorker,
        now: &mut f64,
        request: SimRequest,
    ) -> Vec<(StorageTier, KvEventData)> {
        worker.add_request(request);
        let mut tier_events = Vec::new();
        loop {
            worker.set_time(*now);
            let mut report = StepReport::default();
            if worker.step_into(&mut report) {
                *now += report.duration_ms;
                tier_events.append(&mut report.tier_events);
            } else if let Some(wake) = worker.next_wake_ms() {
                *now = wake;
            } else {
                return tier_events;
            }
        }
    }
    let request = |id: u64, offset: u32| SimRequest {
        id,
        prompt_blocks: hasher.hash_blocks(&prompt(offset)),
        prompt_tokens: 1024,
        output_tokens: 1,
    };
    let mut now = 0.0;
    // The first prompt's 16 blocks are copied to the host as they are computed...
    let stored = run(&mut worker, &mut now, request(0, 0));
    assert!(matches!(
        &stored[..],
        [(StorageTier::Host, KvEventData::Stored { blocks, .. })] if blocks.len() == 16
    ));
    // ...and a second prompt evicts them from the 20-block device cache.
    run(&mut worker, &mut now, request(1, 5_000));
    let before = now;
    run(&mut worker, &mut now, request(2, 0));
    // The device kept the prompt's first 4 blocks (a sequence's tail is evicted first); the
    // next 11 come back from the host (the 16th is copied too, but computed again: the last
    // token always is).
    assert_eq!(worker.drain_cache_hits()[2], (2, 960));
    assert_eq!(
        worker.drain_lower_tier_hits(),
        [LowerTierHit {
            id: 2,
            host_tokens: 704,
            disk_tokens: 0
        }]
    );
    // The copy of 12 blocks of 64 tokens × 131,072 bytes at 32 GB/s took 3.15 ms, before a
    // prefill of one block.
    let copy = 12.0 * 64.0 * 131_072.0 / 32e6;
    let prefill = PolynomialTiming::default().step_ms(&StepShape {
        prefill_tokens: 64,
        decode_sequences: 0,
        kv_usage: 0.0,
    });
    assert!(
        (now - before - copy - prefill).abs() < 1e-6,
        "{}",
        now - before
    );
}
