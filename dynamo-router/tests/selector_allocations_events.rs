//! A routing decision on the KV-event index in its steady state does not allocate: the workload
//! of `selector_allocations.rs` (the routing bench's `decision_w64_b32`: 64 workers, 32-block
//! prompts sharing prefixes, the last 64 requests' loads booked), its cache knowledge a
//! `SharedIndex` fed by the events of the workers' caches instead of the approximate index.
//! Each worker keeps the blocks of the prompts routed to it in an LRU cache of 1,024 blocks and
//! reports what it stores and evicts, as an engine does, once the decision is made.
//!
//! The allocator counts the decisions (and the release of the loads they book), not the events
//! nor their application to the index, whose tables grow with the blocks cached. The file holds
//! one test, so that no other test allocates while it counts.
//!
//! Before `SharedIndex` wrote its answer into the selector's (`OverlapSource::overlaps_into`),
//! every decision whose prompt's first block more than two workers held allocated it.

use std::alloc::System;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, WorkerId};
use dynamo_router::{
    ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, LoadGuard, RouteRequest, Router,
    SelectorConfig, SharedIndex, WorkerSelector,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[path = "../benches/support/synthetic_requests.rs"]
mod synthetic_requests;

#[expect(
    dead_code,
    reason = "the test counts allocations only; the bench reads how full the caches are"
)]
#[path = "../benches/support/worker_caches.rs"]
mod worker_caches;

use synthetic_requests::synthetic_requests;
use worker_caches::WorkerCaches;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WORKERS: u64 = 64;
const PROMPT_BLOCKS: u64 = 32;
const BLOCK: u32 = 512;
const IN_FLIGHT: usize = 64;
const GAP: Duration = Duration::from_millis(60);
/// Blocks each worker's cache holds: a few hundred requests' worth of the workload.
const CACHE_BLOCKS: usize = 1024;

/// Route `requests` one `GAP` apart from `*now`, the last `IN_FLIGHT` loads staying booked,
/// each chosen worker's events applied to `index` after its decision; returns the allocations
/// (and reallocations) made by the decisions and the loads' release.
fn route(
    selector: &WorkerSelector,
    index: &SharedIndex,
    caches: &mut WorkerCaches,
    requests: &[RouteRequest],
    in_flight: &mut VecDeque<LoadGuard>,
    now: &mut Instant,
) -> usize {
    let mut allocations = 0;
    for request in requests {
        let before = GLOBAL.stats();
        if in_flight.len() == IN_FLIGHT {
            in_flight.pop_front();
        }
        let routed = selector.select(request, *now).expect("a worker is free");
        let worker = routed.worker;
        in_flight.push_back(routed.guard);
        let after = GLOBAL.stats();
        allocations +=
            (after.allocations - before.allocations) + (after.reallocations - before.reallocations);
        let events = caches.run(worker, &request.blocks);
        let refused = index.apply_batch(&events);
        assert!(refused.is_empty(), "the index refused {refused:?}");
        *now += GAP;
    }
    allocations
}

/// Decisions before the count.
const WARM_UP: usize = 16_384;
/// Decisions counted.
const COUNTED: usize = 4096;

/// Allocations made by `COUNTED` decisions of `policy` after `WARM_UP`, and the mean number of
/// workers that held the counted prompts' first block.
fn steady_allocations(policy: impl Router) -> (usize, f64) {
    let block_size = BlockSize::new(BLOCK).expect("non-zero");
    let index = SharedIndex::new(block_size);
    let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, index.clone());
    for w in 0..WORKERS {
        selector.insert_worker(WorkerId::new(w));
    }
    let mut caches = WorkerCaches::new(WORKERS, CACHE_BLOCKS, block_size);
    let mut requests = synthetic_requests(WARM_UP + COUNTED, PROMPT_BLOCKS, u64::from(BLOCK));
    let timed = requests.split_off(WARM_UP);
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let mut now = Instant::now();
    route(
        &selector,
        &index,
        &mut caches,
        &requests,
        &mut in_flight,
        &mut now,
    );
    let holders: usize = timed
        .iter()
        .map(|request| index.overlaps(&request.blocks).len())
        .sum();
    let allocations = route(
        &selector,
        &index,
        &mut caches,
        &timed,
        &mut in_flight,
        &mut now,
    );
    (allocations, holders as f64 / COUNTED as f64)
}

#[test]
fn a_steady_decision_on_kv_events_does_not_allocate() {
    // Seeded tie-breaks: the same decisions, so the same count, on every run.
    let ttft = ExpectedTtft::new(ExpectedTtftConfig {
        seed: Some(1),
        ..ExpectedTtftConfig::default()
    });
    let kv = KvCost::new(KvCostConfig {
        seed: Some(1),
        ..KvCostConfig::default()
    });
    let counts = [
        ("ExpectedTtft", steady_allocations(ttft)),
        ("KvCost", steady_allocations(kv)),
    ];
    for (policy, (allocations, holders)) in counts {
        eprintln!(
            "{policy}: {allocations} allocations in {COUNTED} decisions \
             (a prompt's first block on {holders:.1} workers on average before the count)"
        );
        // At most one allocation in 64 decisions: none of them allocates as such.
        assert!(
            allocations * 64 <= COUNTED,
            "{policy}: {allocations} allocations in {COUNTED} decisions"
        );
    }
}
