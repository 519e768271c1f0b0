//! KV-aware routing over vLLM's event format gives the reuse of routing on native events.
//!
//! Mocker workers (`dynamo-mocker`'s `SimWorker`, a vLLM-like scheduler and prefix cache) serve
//! a synthetic trace of prompts sharing prefixes, on a virtual clock, behind the router's
//! `KvCost` policy, twice: once with their KV events applied to the index as our native workers
//! publish them, once with every event written in vLLM's ZMQ layout (token ids, the engine's
//! own block hashes, msgpack batches with sequence numbers) and read back by
//! `dynamo-transport`'s decoder, which is what `--engine-at vllm=…,events=…` runs. The runs are
//! the same but for that path, so their prompt-cache reuse must agree.
//!
//! Not covered here: the ZMQ socket itself (lag, loss and replay are tested in
//! `dynamo-transport`), and a live engine.

#![cfg(feature = "events")]

use std::collections::HashMap;

use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, SequenceHash, WorkerId};
use dynamo_mocker::{EngineConfig, PolynomialTiming, SimRequest, SimWorker, StepReport};
use dynamo_router::{
    Decision, KvCost, KvCostConfig, KvIndex, RouteContext, Router, TierOverlap, WorkerLoad,
    WorkerState,
};

#[path = "support/vllm_wire.rs"]
mod vllm_wire;
use vllm_wire::VllmWire;

const WORKERS: usize = 4;
const BLOCK: u32 = 16;

/// One request of the trace: arrival (ms), prompt tokens, output length.
struct Request {
    at_ms: f64,
    tokens: Vec<u32>,
    output: u64,
}

/// A small deterministic generator (xorshift), so the trace is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Twelve system prompts of 4 to 12 blocks; each request is one of them, then its own
/// question of 0 to 6 blocks and a partial block, then 4 to 40 output tokens.
fn trace(requests: usize) -> Vec<Request> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let prefixes: Vec<Vec<u32>> = (0..12)
        .map(|group| {
            let blocks = 4 + rng.below(9) as usize;
            (0..blocks * BLOCK as usize)
                .map(|i| 1 + group * 10_000 + i as u32)
                .collect()
        })
        .collect();
    (0..requests)
        .map(|n| {
            let mut tokens = prefixes[rng.below(prefixes.len() as u64) as usize].clone();
            let own = rng.below(7) * u64::from(BLOCK) + rng.below(u64::from(BLOCK));
            tokens.extend((0..own).map(|i| 200_000 + (n as u32) * 128 + i as u32));
            Request {
                at_ms: n as f64 * 4.0,
                tokens,
                output: 4 + rng.below(37),
            }
        })
        .collect()
}

/// How events reach the index.
enum Path {
    Native,
    /// Through vLLM's wire format, with the tokens of every prompt block seen.
    Vllm {
        wire: VllmWire,
        tokens: HashMap<SequenceHash, Vec<u32>>,
    },
}

impl Path {
    fn apply(&mut self, index: &mut KvIndex, worker: usize, events: &[KvEventData], id: &mut u64) {
        match self {
            Path::Native => {
                for data in events {
                    let event = KvEvent {
                        worker: WorkerId::new(worker as u64),
                        event_id: *id,
                        tier: Default::default(),
                        data: data.clone(),
                    };
                    *id += 1;
                    index.apply(&event).expect("a native event applies");
                }
            }
            Path::Vllm { wire, tokens } => {
                // Output blocks hold the request's own tokens, never in a prompt: stand-ins
                // that no prompt has (their tail is u32::MAX), keyed by the block's whole hash
                // so that two output blocks never share them (a shared stand-in would make two
                // of the engine's blocks one of ours, and the second removal unknown).
                let block_tokens = |hash: &SequenceHash| {
                    tokens.get(hash).cloned().unwrap_or_else(|| {
                        let mut stand_in = vec![u32::MAX; BLOCK as usize];
                        stand_in[0] = hash.0 as u32;
                        stand_in[1] = (hash.0 >> 32) as u32;
                        stand_in
                    })
                };
                for event in wire.carry(worker, events, block_tokens) {
                    index.apply(&event).expect("a decoded event applies");
                }
            }
        }
    }
}

/// The fraction of prompt tokens found cached, with events reaching the router by `path`.
fn reuse(trace: &[Request], mut path: Path) -> f64 {
    let block_size = BlockSize::new(BLOCK).expect("a block size");
    let hasher = BlockHasher::new(block_size);
    let config = EngineConfig {
        num_gpu_blocks: 384,
        block_size,
        max_num_batched_tokens: 1024,
        max_num_seqs: 32,
        ..EngineConfig::default()
    };
    let mut workers: Vec<SimWorker> = (0..WORKERS)
        .map(|_| SimWorker::new(config, PolynomialTiming::default()).record_events(true))
        .collect();
    let mut busy_until = [0.0f64; WORKERS];
    let mut index = KvIndex::new(block_size);
    let policy = KvCost::new(KvCostConfig {
        seed: Some(7),
        ..KvCostConfig::default()
    });
    let mut report = StepReport::default();
    let mut event_id = 0;
    let (mut prompt_tokens, mut cached_tokens) = (0u64, 0u64);
    let mut step_until = |workers: &mut Vec<SimWorker>,
                          index: &mut KvIndex,
                          path: &mut Path,
                          until: f64,
                          cached: &mut u64| {
        for (w, worker) in workers.iter_mut().enumerate() {
            while busy_until[w] <= until {
                worker.set_time(busy_until[w]);
                if !worker.step_into(&mut report) {
                    busy_until[w] = until;
                    break;
                }
                busy_until[w] += report.duration_ms;
                path.apply(index, w, &report.events, &mut event_id);
            }
            *cached += worker
                .drain_cache_hits()
                .iter()
                .map(|(_, t)| t)
                .sum::<u64>();
        }
    };
    for (n, request) in trace.iter().enumerate() {
        step_until(
            &mut workers,
            &mut index,
            &mut path,
            request.at_ms,
            &mut cached_tokens,
        );
        let blocks = hasher.hash_blocks(&request.tokens);
        if let Path::Vllm { tokens, .. } = &mut path {
            for (block, chunk) in blocks.iter().zip(request.tokens.chunks(BLOCK as usize)) {
                tokens.insert(block.sequence, chunk.to_vec());
            }
        }
        let hashes: Vec<SequenceHash> = blocks.iter().map(|b| b.sequence).collect();
        let overlaps = index.overlaps(&hashes);
        let states: Vec<WorkerState> = workers
            .iter()
            .enumerate()
            .map(|(w, worker)| {
                let metrics = worker.metrics();
                let worker_id = WorkerId::new(w as u64);
                WorkerState {
                    worker: worker_id,
                    cached: TierOverlap {
                        device: overlaps.get(worker_id).device,
                        ..TierOverlap::default()
                    },
                    in_flight: 0,
                    load: WorkerLoad {
                        active_requests: (metrics.waiting + metrics.running) as u32,
                        active_decode_blocks: metrics.blocks_in_use,
                        ..WorkerLoad::default()
                    },
                }
            })
            .collect();
        let context = RouteContext {
            blocks: &hashes,
            prompt_tokens: request.tokens.len() as u64,
            block_size,
            expected_output_tokens: None,
        };
        let Decision::Route(chosen) = policy.route(&context, &states) else {
            panic!("KvCost always routes");
        };
        prompt_tokens += request.tokens.len() as u64;
        workers[chosen.worker as usize].add_request(SimRequest {
            id: n as u64,
            prompt_blocks: blocks,
            prompt_tokens: request.tokens.len() as u64,
            output_tokens: request.output,
        });
    }
    step_until(
        &mut workers,
        &mut index,
        &mut path,
        f64::INFINITY,
        &mut cached_tokens,
    );
    assert!(workers.iter().all(SimWorker::is_idle));
    cached_tokens as f64 / prompt_tokens as f64
}

#[test]
fn routing_on_vllm_format_events_reuses_as_much_as_on_native_events() {
    let trace = trace(1500);
    let native = reuse(&trace, Path::Native);
    let block_size = BlockSize::new(BLOCK).expect("a block size");
    let vllm = reuse(
        &trace,
        Path::Vllm {
            wire: VllmWire::new(WORKERS, block_size),
            tokens: HashMap::new(),
        },
    );
    tracing::info!(native, vllm, "prompt tokens found cached");
    assert!(native > 0.3, "the trace shares prefixes: {native}");
    assert!(
        (vllm - native).abs() <= 0.02 * native,
        "native events {native:.4}, vLLM's format {vllm:.4}"
    );
}
