//! Mocker workers behind the router's `WorkerSelector` on a virtual clock, as `dynamo-replay`
//! runs an aggregated fleet without event lag (arrivals in trace order, each routed at once
//! and its load booked until its first token and its end; each step's KV events applied when
//! the step ends; an arrival goes before a step that ends at the same instant). The replay
//! itself cannot be used for the comparison: it applies the events to the index itself.
//!
//! The workers' events reach the index either as the mocker publishes them or through vLLM's
//! wire format, with token ids made up for the trace's hash ids.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dynamo_core::{BlockHasher, KvEvent, KvEventData, SequenceHash, StorageTier, WorkerId};
use dynamo_mocker::{
    EngineConfig, PolynomialTiming, SimRequest, SimWorker, StepReport, TraceRequest, engine_blocks,
};
use dynamo_router::{LoadGuard, RouteRequest, Router, SelectorConfig, SharedIndex, WorkerSelector};

use crate::mooncake_tokens::{TRACE_BLOCK, output_block, prompt, token};
use crate::vllm_wire::VllmWire;

/// How a prompt becomes blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prompts {
    /// As `dynamo-replay` reads the trace: content hashes derived from the hash id and the
    /// position in it (`dynamo_mocker::engine_blocks`). There are no tokens, so the events
    /// can only be native.
    TraceIds,
    /// Our block hashes of the made-up tokens (`mooncake_tokens::prompt`).
    Tokens,
}

/// How the workers' KV events reach the router's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Events {
    /// As the mocker publishes them, as our native workers do.
    Native,
    /// Written in vLLM's ZMQ layout with each block's token ids, and decoded by
    /// `dynamo-transport`, which recomputes our block hashes from the tokens.
    Vllm,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Prompt tokens found cached over all prompt tokens (the replay's
    /// `prefix_cache_reused_ratio`).
    pub(crate) reuse: f64,
    /// Blocks the workers evicted.
    pub(crate) evicted_blocks: u64,
    /// The worker each request went to, in trace order.
    pub(crate) workers: Vec<u64>,
}

struct Worker {
    engine: SimWorker,
    /// The step in progress.
    report: StepReport,
    /// When the step in progress ends, and its place in the order steps were started.
    due: Option<(f64, u64)>,
}

struct Fleet {
    workers: Vec<Worker>,
    index: SharedIndex,
    wire: Option<VllmWire>,
    block_size: usize,
    /// The hash id and the block within it of every prompt block seen, by our hash: the
    /// tokens an engine would send with the block.
    sources: HashMap<SequenceHash, (u64, usize)>,
    guards: HashMap<u64, LoadGuard>,
    /// Steps started so far.
    order: u64,
    next_event_id: Vec<u64>,
    /// Each request's prompt tokens found cached.
    cached: Vec<u64>,
    evicted_blocks: u64,
}

/// Serve `trace` with `workers` mocker workers of `engine`, routed by `policy`.
///
/// # Panics
///
/// With [`Prompts::TraceIds`] and [`Events::Vllm`] (no tokens to send), and if the index
/// refuses an event.
pub(crate) fn run(
    trace: &[TraceRequest],
    workers: usize,
    engine: EngineConfig,
    policy: impl Router,
    prompts: Prompts,
    events: Events,
) -> Outcome {
    assert!(
        !(prompts == Prompts::TraceIds && events == Events::Vllm),
        "vLLM's events need token ids"
    );
    let block_size = engine.block_size;
    let index = SharedIndex::new(block_size);
    let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, index.clone());
    for w in 0..workers {
        selector.insert_worker(WorkerId::new(w as u64));
    }
    let mut fleet = Fleet {
        workers: (0..workers)
            .map(|_| Worker {
                engine: SimWorker::new(engine, PolynomialTiming::default()).record_events(true),
                report: StepReport::default(),
                due: None,
            })
            .collect(),
        index,
        wire: (events == Events::Vllm).then(|| VllmWire::new(workers, block_size)),
        block_size: block_size.as_usize(),
        sources: HashMap::new(),
        guards: HashMap::new(),
        order: 0,
        next_event_id: vec![0; workers],
        cached: vec![0; trace.len()],
        evicted_blocks: 0,
    };
    let hasher = BlockHasher::new(block_size);
    let per_id = TRACE_BLOCK / fleet.block_size;
    let epoch = Instant::now();
    let mut arrivals: Vec<(f64, usize)> = trace
        .iter()
        .enumerate()
        .map(|(i, request)| (request.timestamp, i))
        .collect();
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut chosen = vec![u64::MAX; trace.len()];
    let mut arrivals = arrivals.into_iter().peekable();
    loop {
        let step = fleet.next_step();
        if let Some(&(now_ms, i)) = arrivals.peek()
            && step.is_none_or(|(end_ms, _)| now_ms <= end_ms)
        {
            arrivals.next();
            let request = &trace[i];
            let blocks = match prompts {
                Prompts::TraceIds => engine_blocks(request, TRACE_BLOCK as u64, block_size)
                    .expect("trace blocks are whole engine blocks"),
                Prompts::Tokens => hasher.hash_blocks(&prompt(request)),
            };
            if fleet.wire.is_some() {
                for (k, block) in blocks.iter().enumerate() {
                    let source = (request.hash_ids[k / per_id], k % per_id);
                    fleet.sources.insert(block.sequence, source);
                }
            }
            let route = RouteRequest {
                blocks: blocks.iter().map(|b| b.sequence).collect(),
                prompt_tokens: request.input_length,
                expected_output_tokens: None,
                sequences: 1,
                session_id: None,
                priority: 0,
            };
            let now = epoch + Duration::from_secs_f64(now_ms / 1000.0);
            let routed = selector
                .select(&route, now)
                .expect("no thresholds: always routed");
            fleet.guards.insert(i as u64, routed.guard);
            chosen[i] = routed.worker.worker;
            let w = routed.worker.worker as usize;
            fleet.workers[w].engine.add_request(SimRequest {
                id: i as u64,
                prompt_blocks: blocks,
                prompt_tokens: request.input_length.max(1),
                output_tokens: request.output_length.max(1),
            });
            if fleet.workers[w].due.is_none() {
                fleet.start_step(w, now_ms);
            }
            continue;
        }
        let Some((end_ms, w)) = step else {
            break;
        };
        fleet.step_done(w, end_ms);
    }
    assert!(fleet.workers.iter().all(|w| w.engine.is_idle()));
    assert!(fleet.guards.is_empty(), "every request finished");
    let input: u64 = trace.iter().map(|r| r.input_length).sum();
    Outcome {
        reuse: fleet.cached.iter().sum::<u64>() as f64 / input as f64,
        evicted_blocks: fleet.evicted_blocks,
        workers: chosen,
    }
}

impl Fleet {
    /// The worker whose step ends first (ties: the first started), and when.
    fn next_step(&self) -> Option<(f64, usize)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(w, worker)| worker.due.map(|(end, order)| (end, order, w)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(end, _, w)| (end, w))
    }

    fn start_step(&mut self, w: usize, now_ms: f64) {
        let worker = &mut self.workers[w];
        worker.engine.set_time(now_ms);
        worker.due = None;
        if worker.engine.step_into(&mut worker.report) {
            self.order += 1;
            worker.due = Some((now_ms + worker.report.duration_ms, self.order));
        }
    }

    fn step_done(&mut self, w: usize, now_ms: f64) {
        let worker = &mut self.workers[w];
        for (id, cached) in worker.engine.drain_cache_hits() {
            self.cached[id as usize] = cached;
        }
        for id in &worker.report.first_tokens {
            if let Some(guard) = self.guards.get_mut(id) {
                guard.first_token();
            }
        }
        for id in &worker.report.finished {
            self.guards.remove(id);
        }
        self.publish(w);
        self.start_step(w, now_ms);
    }

    /// Apply the ended step's KV events to the index, by the fleet's path.
    fn publish(&mut self, w: usize) {
        let events = &self.workers[w].report.events;
        if events.is_empty() {
            return;
        }
        for data in events {
            if let KvEventData::Removed { blocks } = data {
                self.evicted_blocks += blocks.len() as u64;
            }
        }
        let applied: Vec<KvEvent> = match &mut self.wire {
            None => events
                .iter()
                .map(|data| {
                    let event_id = self.next_event_id[w];
                    self.next_event_id[w] += 1;
                    KvEvent {
                        worker: WorkerId::new(w as u64),
                        event_id,
                        tier: StorageTier::Device,
                        data: data.clone(),
                    }
                })
                .collect(),
            Some(wire) => {
                let (sources, block_size) = (&self.sources, self.block_size);
                wire.carry(w, events, |hash| match sources.get(hash) {
                    Some(&(id, block)) => (block * block_size..(block + 1) * block_size)
                        .map(|position| token(id, position))
                        .collect(),
                    None => output_block(hash, block_size),
                })
            }
        };
        let refused = self.index.apply_batch(&applied);
        assert!(refused.is_empty(), "the index refused {refused:?}");
    }
}
