//! The reference policies' decisions on hand-built snapshots.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use dynamo_core::{BlockSize, SequenceHash, WorkerId};
use dynamo_router::{
    Decision, ExpectedTtft, KvCost, KvCostConfig, LeastLoaded, PowerOfTwoChoices, Random,
    RoundRobin, RouteContext, Router, TierOverlap, WorkerLoad, WorkerState,
};

const BLOCK: u32 = 64;

fn context(blocks: &[SequenceHash]) -> RouteContext<'_> {
    RouteContext {
        blocks,
        prompt_tokens: blocks.len() as u64 * u64::from(BLOCK),
        block_size: BlockSize::new(BLOCK).unwrap(),
        expected_output_tokens: None,
    }
}

fn hashes(n: u64) -> Vec<SequenceHash> {
    (0..n).map(SequenceHash).collect()
}

fn worker(id: u64) -> WorkerState {
    WorkerState {
        worker: WorkerId::new(id),
        cached: TierOverlap::default(),
        in_flight: 0,
        load: WorkerLoad::default(),
    }
}

fn cached(id: u64, device: u32) -> WorkerState {
    WorkerState {
        cached: TierOverlap {
            device,
            ..Default::default()
        },
        ..worker(id)
    }
}

fn loaded(state: WorkerState, requests: u32, decode_blocks: u64) -> WorkerState {
    WorkerState {
        load: WorkerLoad {
            active_requests: requests,
            active_decode_blocks: decode_blocks,
            ..Default::default()
        },
        ..state
    }
}

fn chosen(decision: Decision) -> u64 {
    match decision {
        Decision::Route(worker) => worker.worker,
        other => panic!("expected a worker, got {other:?}"),
    }
}

fn kv_policies() -> Vec<Box<dyn Router>> {
    vec![
        Box::new(KvCost::new(KvCostConfig {
            seed: Some(1),
            ..Default::default()
        })),
        Box::new(ExpectedTtft::default()),
    ]
}

#[test]
fn round_robin_cycles_through_every_worker() {
    let policy = RoundRobin::new();
    let workers: Vec<_> = (0..3).map(worker).collect();
    let blocks = hashes(2);
    let picks: Vec<u64> = (0..7)
        .map(|_| chosen(policy.route(&context(&blocks), &workers)))
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn with_equal_load_kv_policies_pick_the_deepest_overlap() {
    let blocks = hashes(8);
    let workers = [cached(0, 2), cached(1, 7), cached(2, 5)];
    for policy in kv_policies() {
        assert_eq!(
            chosen(policy.route(&context(&blocks), &workers)),
            1,
            "{policy:?}"
        );
    }
}

#[test]
fn with_equal_overlap_kv_policies_pick_the_least_loaded() {
    let blocks = hashes(8);
    let workers = [
        loaded(cached(0, 4), 3, 300),
        loaded(cached(1, 4), 1, 40),
        loaded(cached(2, 4), 2, 120),
    ];
    for policy in kv_policies() {
        assert_eq!(
            chosen(policy.route(&context(&blocks), &workers)),
            1,
            "{policy:?}"
        );
    }
}

#[test]
fn host_cached_blocks_earn_less_credit_than_device_ones() {
    let blocks = hashes(8);
    let host = WorkerState {
        cached: TierOverlap {
            host: 6,
            ..Default::default()
        },
        ..worker(0)
    };
    let device = cached(1, 5);
    // 6 host blocks earn 4.5 blocks of credit, 5 device blocks earn 5.
    let policy = KvCost::default();
    assert!(policy.cost(&context(&blocks), &device) < policy.cost(&context(&blocks), &host));
    assert_eq!(chosen(policy.route(&context(&blocks), &[host, device])), 1);
}

#[test]
fn load_based_policies_prefer_the_idle_worker() {
    let blocks = hashes(1);
    let workers = [loaded(worker(0), 5, 50), worker(1)];
    assert_eq!(
        chosen(LeastLoaded::new(Some(3)).route(&context(&blocks), &workers)),
        1
    );
    // With two workers, the two choices are both of them: the idle one always wins.
    let p2c = PowerOfTwoChoices::new(Some(3));
    for _ in 0..20 {
        assert_eq!(chosen(p2c.route(&context(&blocks), &workers)), 1);
    }
}

#[test]
fn random_reaches_every_worker() {
    let policy = Random::new(Some(9));
    let workers: Vec<_> = (0..4).map(worker).collect();
    let blocks = hashes(1);
    let mut seen = [0; 4];
    for _ in 0..200 {
        seen[chosen(policy.route(&context(&blocks), &workers)) as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
}

#[test]
fn expected_ttft_follows_a_prefix_still_being_computed_but_the_incumbent_does_not() {
    // Worker 0 is prefilling this very prompt for an earlier request of a burst; no KV event
    // has arrived yet, so neither worker shows a cached prefix.
    let blocks = hashes(32);
    let mut computing = worker(0);
    computing.in_flight = 32;
    computing.load = WorkerLoad {
        active_requests: 1,
        active_prefill_tokens: 32 * u64::from(BLOCK),
        active_decode_blocks: 33,
        ..Default::default()
    };
    let workers = [computing, worker(1)];
    assert_eq!(
        chosen(ExpectedTtft::default().route(&context(&blocks), &workers)),
        0
    );
    assert_eq!(
        chosen(KvCost::default().route(&context(&blocks), &workers)),
        1
    );
}

#[test]
fn expected_ttft_avoids_a_worker_whose_queue_outweighs_its_cache() {
    // Worker 0 caches half the prompt but has 64k prompt tokens queued for prefill.
    let blocks = hashes(64);
    let mut queued = cached(0, 32);
    queued.load.active_prefill_tokens = 65_536;
    queued.load.active_requests = 4;
    let workers = [queued, worker(1)];
    assert_eq!(
        chosen(ExpectedTtft::default().route(&context(&blocks), &workers)),
        1
    );
}
