//! The cost of one routing decision (snapshot, policy, booking) on the Mooncake trace, at 8,
//! 64 and 256 workers, per policy. The baseline, in the same run, is round-robin through the
//! same selector, its decisions recorded in the approximate index as a cache-aware policy's
//! are: the difference is what the cache-aware policies add. `round_robin_unrecorded` is plain
//! round-robin, for which nothing is recorded (it reads no cached prefixes).
//!
//! Each request of the trace is routed with its 512-token blocks; the last 64 requests' loads
//! stay booked, as if they were still streaming, and the cache knowledge is the approximate
//! index, fed by the decisions themselves. `decision_w64_b32` holds the decision cost to its
//! target: 64 workers, prompts of 32 blocks, an approximate index in its steady state. Its
//! `expected_ttft_reported_capacity` is `expected_ttft` with every worker's KV capacity known
//! from its reports, as a live frontend's workers give it, so that each decision reads each
//! worker's own.
//!
//! `decision_w64_b32_events` is the same decision in the router's main mode, its cache
//! knowledge the index fed by the KV events of the chosen workers (`SharedIndex`), each a cache
//! of 1,024 blocks that reports its stores and evictions (`support/worker_caches.rs`); the
//! decisions are timed in batches, the events applied between them, untimed.
//!
//! `decision_w64_b32_shared` is the same decision by a router replica that shares its state
//! (`dynamo_router::replicas`): each decision also builds and queues its messages, which are
//! taken from the outbox as a transport would (their JSON encoding, the transport's work, is
//! not included); its baseline is the same policy without sharing, in the same run.
//!
//! Times are the benchmark thread's CPU time (`support/cpu_time.rs`), so that other processes
//! on a shared machine inflate them less.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::Measurement;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{BlockSize, KvEvent, ReplicaId, SequenceHash, WorkerId};
use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
use dynamo_router::{
    ApproxConfig, ApproxIndex, Decision, ExpectedTtft, KvCost, LeastLoaded, LoadGuard,
    PowerOfTwoChoices, RoundRobin, RouteContext, RouteRequest, Router, SelectorConfig, SharedIndex,
    WorkerSelector, WorkerState,
};

#[expect(
    dead_code,
    reason = "this bench reads the trace only; the event generator serves the index bench"
)]
#[path = "support/trace_events.rs"]
mod trace_events;

#[path = "support/cpu_time.rs"]
mod cpu_time;

#[path = "support/synthetic_requests.rs"]
mod synthetic_requests;

#[path = "support/worker_caches.rs"]
mod worker_caches;

use cpu_time::ThreadCpuTime;
use synthetic_requests::synthetic_requests;
use worker_caches::WorkerCaches;

type PolicyFactory = fn() -> Box<dyn Router>;

/// Round-robin with its decisions recorded in the approximate index, as a cache-aware
/// policy's are (plain round-robin reads no cached prefixes, so none are recorded for it):
/// the baseline, the selector's work without a policy's.
#[derive(Debug)]
struct RecordedRoundRobin(RoundRobin);

impl Router for RecordedRoundRobin {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        self.0.route(request, workers)
    }
}

fn baseline() -> Box<dyn Router> {
    Box::new(RecordedRoundRobin(RoundRobin::new()))
}

const IN_FLIGHT: usize = 64;
const TRACE_BLOCK: u64 = 512;

fn requests(trace: &[Vec<u64>]) -> Vec<RouteRequest> {
    trace
        .iter()
        .map(|ids| RouteRequest {
            blocks: ids
                .iter()
                .map(|&id| SequenceHash(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect(),
            prompt_tokens: ids.len() as u64 * TRACE_BLOCK,
            expected_output_tokens: None,
            sequences: 1,
            session_id: None,
            priority: 0,
        })
        .collect()
}

/// A selector being driven: its open guards and its clock.
struct Run {
    selector: WorkerSelector,
    in_flight: VecDeque<LoadGuard>,
    now: Instant,
}

impl Run {
    fn new(selector: WorkerSelector) -> Self {
        Run {
            selector,
            in_flight: VecDeque::with_capacity(IN_FLIGHT),
            now: Instant::now(),
        }
    }
}

/// Route every request, `gap` apart, the loads of the last `IN_FLIGHT` requests staying
/// booked. The run is returned, so that dropping the selector and the guards is not timed.
fn route_all(mut run: Run, requests: &[RouteRequest], gap: Duration) -> Run {
    for request in requests {
        if run.in_flight.len() == IN_FLIGHT {
            run.in_flight.pop_front();
        }
        if let Ok(routed) = run.selector.select(black_box(request), run.now) {
            run.in_flight.push_back(routed.guard);
        }
        run.now += gap;
    }
    run
}

fn selector(workers: u64, policy: impl Router) -> WorkerSelector {
    let block_size = BlockSize::new(TRACE_BLOCK as u32).expect("non-zero");
    let source = ApproxIndex::new(block_size, ApproxConfig::default());
    let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, source);
    for w in 0..workers {
        selector.insert_worker(WorkerId::new(w));
    }
    selector
}

fn routing(c: &mut Criterion<ThreadCpuTime>) {
    let requests = requests(&trace_events::load_trace());
    for workers in [8u64, 64, 256] {
        let mut group = c.benchmark_group(format!("routing_w{workers}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(requests.len() as u64));
        let policies: [(&str, PolicyFactory); 5] = [
            ("baseline_round_robin", baseline),
            ("least_loaded", || Box::new(LeastLoaded::new(Some(1)))),
            ("power_of_two", || Box::new(PowerOfTwoChoices::new(Some(1)))),
            ("kv_cost", || Box::new(KvCost::default())),
            ("expected_ttft", || Box::new(ExpectedTtft::default())),
        ];
        for (name, policy) in policies {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || selector(workers, policy()),
                    |selector| route_all(Run::new(selector), &requests, Duration::ZERO),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

const PROMPT_BLOCKS: u64 = 32;

/// The time between two requests of the decision bench: 16 requests a second, so that the
/// approximate index's predictions expire (after the default 120 s, about 2,000 requests) and
/// it keeps a steady size, as in a router that has been running for a while.
const ARRIVAL_GAP: Duration = Duration::from_millis(60);

/// Decisions routed untimed before the timed ones (4 minutes of arrivals): the approximate
/// index then holds what a running router holds, twice the predictions' time to live.
const WARM_UP_DECISIONS: usize = 4096;

/// Decisions timed (34 minutes of arrivals): long enough that the approximate index's table,
/// swept of its expired predictions when they fill it (about every 6,000 decisions here), is
/// swept several times inside the window, so that each decision carries its share of the
/// sweeps, as in a router that runs for hours. (A window of 4,096 saw none and gave 15-25%
/// less.)
const TIMED_DECISIONS: usize = 32_768;

/// The decision bench's requests: the untimed warm-up's and the timed ones.
fn decision_requests() -> (Vec<RouteRequest>, Vec<RouteRequest>) {
    let mut timed = synthetic_requests(
        WARM_UP_DECISIONS + TIMED_DECISIONS,
        PROMPT_BLOCKS,
        TRACE_BLOCK,
    );
    let warm_up = timed.drain(..WARM_UP_DECISIONS).collect();
    (warm_up, timed)
}

/// One decision at 64 workers with a 32-block prompt: the figure the router's decision cost is
/// held to.
fn decision_w64_b32(c: &mut Criterion<ThreadCpuTime>) {
    let (warm_up, requests) = decision_requests();
    let mut group = c.benchmark_group("decision_w64_b32");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests.len() as u64));
    // The last: every worker has reported its KV capacity (16,384 blocks of 64 tokens), as
    // a live frontend's workers do, so each decision reads each worker's own.
    let policies: [(&str, PolicyFactory, Option<u64>); 5] = [
        ("baseline_round_robin", baseline, None),
        ("kv_cost", || Box::new(KvCost::default()), None),
        ("expected_ttft", || Box::new(ExpectedTtft::default()), None),
        (
            "round_robin_unrecorded",
            || Box::new(RoundRobin::new()),
            None,
        ),
        (
            "expected_ttft_reported_capacity",
            || Box::new(ExpectedTtft::default()),
            Some(16_384 * 64 / TRACE_BLOCK),
        ),
    ];
    for (name, policy, capacity) in policies {
        let made = move || {
            let selector = selector(64, policy());
            for w in 0..64 {
                selector.load().set_kv_capacity(WorkerId::new(w), capacity);
            }
            Run::new(selector)
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || route_all(made(), &warm_up, ARRIVAL_GAP),
                |run| route_all(run, &requests, ARRIVAL_GAP),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Blocks each worker's cache holds in `decision_w64_b32_events`: a few hundred requests'
/// worth of the workload (as in `tests/selector_allocations_events.rs`).
const CACHE_BLOCKS: usize = 1024;

/// Decisions timed together in `decision_w64_b32_events`, the events of their chosen workers
/// applied after them, untimed: reading the thread's CPU time costs about 0.7 µs here, too much
/// to read it around each decision. A decision thus sees the events of the decisions before
/// its batch, not yet those of the up to 31 before it in the batch (about 2 s of arrivals, as a
/// worker reports a 16k-token prompt's blocks once it has computed them); their blocks are
/// in flight on the chosen workers, which the load snapshot reports.
const EVENTS_BATCH: usize = 32;

/// A selector deciding on KV events: its run, its index and the workers' caches feeding it.
struct EventsRun {
    run: Run,
    index: SharedIndex,
    caches: WorkerCaches,
    /// The chosen workers of the batch being routed.
    chosen: Vec<WorkerId>,
    /// The events of a batch (a buffer kept between batches).
    events: Vec<KvEvent>,
}

impl EventsRun {
    /// 64 workers, an empty index, each worker's KV capacity reported as `capacity`.
    fn new(policy: Box<dyn Router>, capacity: Option<u64>) -> Self {
        let block_size = BlockSize::new(TRACE_BLOCK as u32).expect("non-zero");
        let index = SharedIndex::new(block_size);
        let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, index.clone());
        for w in 0..64 {
            selector.insert_worker(WorkerId::new(w));
            selector.load().set_kv_capacity(WorkerId::new(w), capacity);
        }
        EventsRun {
            run: Run::new(selector),
            index,
            caches: WorkerCaches::new(64, CACHE_BLOCKS, block_size),
            chosen: Vec::with_capacity(EVENTS_BATCH),
            events: Vec::new(),
        }
    }

    /// Route `requests` as [`route_all`] does, [`EVENTS_BATCH`] at a time, each batch's
    /// events applied to the index after it. Returns the thread's CPU time spent in the
    /// batches of decisions and in applying the events, apart.
    fn route(&mut self, requests: &[RouteRequest], gap: Duration) -> (Duration, Duration) {
        let clock = ThreadCpuTime;
        let (mut deciding, mut applying) = (Duration::ZERO, Duration::ZERO);
        for batch in requests.chunks(EVENTS_BATCH) {
            let start = clock.start();
            let run = &mut self.run;
            for request in batch {
                if run.in_flight.len() == IN_FLIGHT {
                    run.in_flight.pop_front();
                }
                if let Ok(routed) = run.selector.select(black_box(request), run.now) {
                    self.chosen.push(routed.worker);
                    run.in_flight.push_back(routed.guard);
                }
                run.now += gap;
            }
            deciding += clock.end(start);
            for (request, worker) in batch.iter().zip(self.chosen.drain(..)) {
                self.events.extend(self.caches.run(worker, &request.blocks));
            }
            let start = clock.start();
            let refused = self.index.apply_batch(&self.events);
            applying += clock.end(start);
            assert!(refused.is_empty(), "the index refused {refused:?}");
            self.events.clear();
        }
        (deciding, applying)
    }
}

/// The decision of `decision_w64_b32` in the router's main mode: its overlap source the
/// index fed by the workers' KV events (`SharedIndex`) instead of the approximate index. Each
/// worker is an LRU cache of [`CACHE_BLOCKS`] blocks that reports what it stores (the routed
/// prompt's blocks it did not hold) and evicts. Only the decisions are timed, in batches of
/// [`EVENTS_BATCH`], the events applied between them, except in `events_applied_expected_ttft`,
/// which times the application of the events of `expected_ttft`'s decisions alone.
fn decision_w64_b32_events(c: &mut Criterion<ThreadCpuTime>) {
    let (warm_up, requests) = decision_requests();
    let mut group = c.benchmark_group("decision_w64_b32_events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests.len() as u64));
    // Round-robin's decisions are recorded or not alike here: the index ignores them.
    let policies: [(&str, PolicyFactory, Option<u64>); 4] = [
        ("baseline_round_robin", baseline, None),
        ("kv_cost", || Box::new(KvCost::default()), None),
        ("expected_ttft", || Box::new(ExpectedTtft::default()), None),
        (
            "expected_ttft_reported_capacity",
            || Box::new(ExpectedTtft::default()),
            Some(16_384 * 64 / TRACE_BLOCK),
        ),
    ];
    let made = |policy: PolicyFactory, capacity| {
        let mut run = EventsRun::new(policy(), capacity);
        run.route(&warm_up, ARRIVAL_GAP);
        run
    };
    let mut told = false;
    for (name, policy, capacity) in policies {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let mut run = made(policy, capacity);
                        if !std::mem::replace(&mut told, true) {
                            eprintln!(
                                "after the warm-up the workers' caches hold {} blocks of {}",
                                run.caches.held(),
                                64 * CACHE_BLOCKS
                            );
                        }
                        run.route(&requests, ARRIVAL_GAP).0
                    })
                    .sum()
            })
        });
    }
    group.bench_function("events_applied_expected_ttft", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let factory: PolicyFactory = || Box::new(ExpectedTtft::default());
                    made(factory, None).route(&requests, ARRIVAL_GAP).1
                })
                .sum()
        })
    });
    group.finish();
}

/// [`route_all`] by a replica that shares its state, its messages taken as they come.
fn route_all_shared(
    mut run: Run,
    state: &ReplicaState,
    requests: &[RouteRequest],
    gap: Duration,
) -> Run {
    for request in requests {
        if run.in_flight.len() == IN_FLIGHT {
            run.in_flight.pop_front();
        }
        if let Ok(routed) = run.selector.select(black_box(request), run.now) {
            run.in_flight.push_back(routed.guard);
        }
        while let Some(message) = state.try_next_message() {
            black_box(message);
        }
        run.now += gap;
    }
    run
}

/// A selector over 64 workers whose load and predictions are shared.
fn shared_selector(policy: impl Router) -> (WorkerSelector, ReplicaState) {
    let block_size = BlockSize::new(TRACE_BLOCK as u32).expect("non-zero");
    let state = ReplicaState::new(ReplicaConfig::new(ReplicaId(1)));
    let source = state.predictions(ApproxIndex::new(block_size, ApproxConfig::default()));
    let config = SelectorConfig::new(block_size);
    let selector = WorkerSelector::with_load(config, policy, source, state.load());
    for w in 0..64 {
        selector.insert_worker(WorkerId::new(w));
    }
    (selector, state)
}

/// The decision of `decision_w64_b32` by a replica that shares its state, against the same
/// policy alone.
fn decision_w64_b32_shared(c: &mut Criterion<ThreadCpuTime>) {
    let (warm_up, requests) = decision_requests();
    let mut group = c.benchmark_group("decision_w64_b32_shared");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.bench_function("baseline_expected_ttft_alone", |b| {
        b.iter_batched(
            || {
                let selector = selector(64, ExpectedTtft::default());
                route_all(Run::new(selector), &warm_up, ARRIVAL_GAP)
            },
            |run| route_all(run, &requests, ARRIVAL_GAP),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("expected_ttft_shared", |b| {
        b.iter_batched(
            || {
                let (selector, state) = shared_selector(ExpectedTtft::default());
                let run = route_all_shared(Run::new(selector), &state, &warm_up, ARRIVAL_GAP);
                (run, state)
            },
            |(run, state)| (route_all_shared(run, &state, &requests, ARRIVAL_GAP), state),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = decision_w64_b32, decision_w64_b32_events, decision_w64_b32_shared, routing
}
criterion_main!(benches);
