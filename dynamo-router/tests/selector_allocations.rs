//! A routing decision in its steady state does not allocate: the workload of the routing bench's
//! `decision_w64_b32` (64 workers, 32-block prompts sharing prefixes, the approximate index fed
//! by the decisions and expiring, the last 64 requests' loads booked), counted by an
//! instrumented global allocator. The file holds one test, so that no other test allocates
//! while it counts.
//!
//! What is left is buffers growing to a new peak (a worker's queue of touches, the number of
//! blocks held by more than eight workers at once), rarer the longer the router runs: after
//! 16,384 decisions, a few dozen in the next 4,096. Before, every decision whose prompt was
//! predicted on more than two workers allocated its overlap answer (1.04 per decision).

use std::alloc::System;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, WorkerId};
use dynamo_router::{
    ApproxConfig, ApproxIndex, ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, LoadGuard,
    RouteRequest, Router, SelectorConfig, WorkerSelector,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[path = "../benches/support/synthetic_requests.rs"]
mod synthetic_requests;

use synthetic_requests::synthetic_requests;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WORKERS: u64 = 64;
const PROMPT_BLOCKS: u64 = 32;
const BLOCK: u32 = 512;
const IN_FLIGHT: usize = 64;
/// 16 requests a second: predictions expire after the default 120 s, about 2,000 requests.
const GAP: Duration = Duration::from_millis(60);

/// Route `requests` one `GAP` apart from `*now`, the last `IN_FLIGHT` loads staying booked.
fn route(
    selector: &WorkerSelector,
    requests: &[RouteRequest],
    in_flight: &mut VecDeque<LoadGuard>,
    now: &mut Instant,
) {
    for request in requests {
        if in_flight.len() == IN_FLIGHT {
            in_flight.pop_front();
        }
        let routed = selector.select(request, *now).expect("a worker is free");
        in_flight.push_back(routed.guard);
        *now += GAP;
    }
}

/// Decisions before the count: about eight times the predictions' time to live.
const WARM_UP: usize = 16_384;
/// Decisions counted.
const COUNTED: usize = 4096;

/// Allocations (and reallocations) made by `COUNTED` decisions of `policy` after `WARM_UP`.
fn steady_allocations(policy: impl Router, capacity: Option<u64>) -> usize {
    let block_size = BlockSize::new(BLOCK).expect("non-zero");
    let source = ApproxIndex::new(block_size, ApproxConfig::default());
    let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, source);
    for w in 0..WORKERS {
        selector.insert_worker(WorkerId::new(w));
        selector.load().set_kv_capacity(WorkerId::new(w), capacity);
    }
    let mut requests = synthetic_requests(WARM_UP + COUNTED, PROMPT_BLOCKS, u64::from(BLOCK));
    let timed = requests.split_off(WARM_UP);
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let mut now = Instant::now();
    route(&selector, &requests, &mut in_flight, &mut now);
    let before = GLOBAL.stats();
    route(&selector, &timed, &mut in_flight, &mut now);
    let after = GLOBAL.stats();
    (after.allocations - before.allocations) + (after.reallocations - before.reallocations)
}

#[test]
fn a_steady_decision_does_not_allocate() {
    // Seeded tie-breaks: the same decisions, so the same count, on every run.
    let ttft = || {
        ExpectedTtft::new(ExpectedTtftConfig {
            seed: Some(1),
            ..ExpectedTtftConfig::default()
        })
    };
    let kv = KvCost::new(KvCostConfig {
        seed: Some(1),
        ..KvCostConfig::default()
    });
    let counts = [
        ("ExpectedTtft", steady_allocations(ttft(), None)),
        (
            "ExpectedTtft, capacities reported",
            steady_allocations(ttft(), Some(2048)),
        ),
        ("KvCost", steady_allocations(kv, None)),
    ];
    for (policy, allocations) in counts {
        eprintln!("{policy}: {allocations} allocations in {COUNTED} decisions");
        // At most one allocation in 64 decisions: none of them allocates as such.
        assert!(
            allocations * 64 <= COUNTED,
            "{policy}: {allocations} allocations in {COUNTED} decisions"
        );
    }
}
