//! The routing core: booking before dispatch, thresholds, affinity, and no herding.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, GenerateRequest, RoutingHints, WorkerId};
use dynamo_router::{
    AffinityConfig, ApproxConfig, ApproxIndex, BusyThresholds, ExpectedTtft, KvCost, KvCostConfig,
    NotRouted, Random, RoundRobin, RouteRequest, Router, SelectorConfig, SharedIndex,
    WorkerSelector,
};

const BLOCK: u32 = 16;

fn block_size() -> BlockSize {
    BlockSize::new(BLOCK).unwrap()
}

fn selector(workers: u64, config: SelectorConfig, policy: impl Router) -> WorkerSelector {
    let source = ApproxIndex::new(block_size(), ApproxConfig::default());
    let selector = WorkerSelector::new(config, policy, source);
    for w in 0..workers {
        selector.insert_worker(WorkerId::new(w));
    }
    selector
}

/// A prompt of `shared` tokens common to every request, then `own` tokens unique to `id`.
fn request(id: u32, shared: u32, own: u32) -> RouteRequest {
    let mut tokens: Vec<u32> = (0..shared).collect();
    tokens.extend((0..own).map(|i| 1_000_000 + id * 10_000 + i));
    RouteRequest::new(
        &GenerateRequest::new(format!("r{id}"), "m", tokens),
        block_size(),
    )
}

/// How many of 200 concurrent requests each worker got, and the workers of the first five.
fn spread_of(policy: impl Router) -> (Vec<usize>, Vec<u64>) {
    let selector = selector(4, SelectorConfig::new(block_size()), policy);
    let now = Instant::now();
    let mut counts = vec![0usize; 4];
    let mut first = Vec::new();
    // 200 requests in flight at once (their guards are held), sharing a 1,024-token prefix.
    let guards: Vec<_> = (0..200)
        .map(|i| {
            let routed = selector.select(&request(i, 1024, 64), now).unwrap();
            counts[routed.worker.worker as usize] += 1;
            if first.len() < 5 {
                first.push(routed.worker.worker);
            }
            routed.guard
        })
        .collect();
    assert_eq!(guards.len(), 200);
    let booked: u32 = (0..4)
        .map(|w| selector.load().load(WorkerId::new(w)).active_requests)
        .sum();
    assert_eq!(booked, 200);
    drop(guards);
    assert!(
        (0..4).all(|w| selector.load().load(WorkerId::new(w)).active_requests == 0),
        "every booking is released with its guard"
    );
    (counts, first)
}

#[test]
fn a_shared_prefix_spreads_once_load_builds() {
    let (incumbent, _) = spread_of(KvCost::new(KvCostConfig {
        seed: Some(5),
        ..Default::default()
    }));
    let (ours, first) = spread_of(ExpectedTtft::default());
    for counts in [incumbent, ours] {
        let most = counts.iter().max().copied().unwrap_or(0);
        assert!(
            counts.iter().all(|&n| n > 0),
            "every worker serves: {counts:?}"
        );
        assert!(most < 120, "no worker takes most of the burst: {counts:?}");
    }
    // Ours first follows the prefix the first request is computing, before spreading (with
    // a prefix of 1,024 tokens the stall of one more request there soon outweighs it).
    assert_eq!(first[1], first[0], "{first:?}");
}

/// The predictions an approximate selector holds after routing 8 requests sharing a prefix.
fn predicted_after_routing(policy: impl Router) -> u64 {
    let index = ApproxIndex::new(block_size(), ApproxConfig::default());
    let selector = WorkerSelector::new(SelectorConfig::new(block_size()), policy, index.clone());
    for w in 0..4 {
        selector.insert_worker(WorkerId::new(w));
    }
    let now = Instant::now();
    for i in 0..8 {
        drop(selector.select(&request(i, 64, 16), now).unwrap());
    }
    index.predicted_blocks()
}

#[test]
fn a_cache_blind_policy_records_no_predictions() {
    // Round-robin and random do not read cached prefixes: nothing is recorded for them.
    assert_eq!(predicted_after_routing(RoundRobin::new()), 0);
    assert_eq!(predicted_after_routing(Random::new(Some(1))), 0);
    // Cache-aware policies learn from their decisions (5 blocks per request on some worker).
    assert!(predicted_after_routing(KvCost::default()) >= 5);
    assert!(predicted_after_routing(ExpectedTtft::default()) >= 5);
}

#[test]
fn thresholds_exclude_busy_workers_and_then_ask_to_queue() {
    let mut config = SelectorConfig::new(block_size());
    config.thresholds = BusyThresholds {
        max_active_requests: Some(2),
        ..Default::default()
    };
    let selector = selector(2, config, KvCost::default());
    let now = Instant::now();
    let guards: Vec<_> = (0..4)
        .map(|i| selector.select(&request(i, 64, 16), now).unwrap())
        .collect();
    for w in 0..2 {
        assert_eq!(selector.load().load(WorkerId::new(w)).active_requests, 2);
    }
    let err = selector.select(&request(9, 64, 16), now).unwrap_err();
    assert!(matches!(err, NotRouted::AllBusy { uncached_tokens } if uncached_tokens <= 80));
    drop(guards);
    assert!(selector.select(&request(9, 64, 16), now).is_ok());
}

#[test]
fn a_forked_request_books_each_of_its_sequences() {
    let mut config = SelectorConfig::new(block_size());
    config.thresholds = BusyThresholds {
        max_active_requests: Some(4),
        ..Default::default()
    };
    let selector = selector(1, config, KvCost::default());
    let worker = WorkerId::new(0);
    let now = Instant::now();
    // Four choices forked after one prefill of a 64-token prompt (four full blocks).
    let mut forked = GenerateRequest::new("forked", "m", (0..64).collect::<Vec<u32>>());
    forked.n = 4;
    forked.routing.expected_output_tokens = Some(100);
    let route = RouteRequest::new(&forked, block_size());
    assert_eq!(route.sequences, 4);
    let mut routed = selector.select(&route, now).unwrap();
    let load = selector.load().load(worker);
    assert_eq!(load.active_requests, 4);
    assert_eq!(
        load.active_prefill_tokens, 64,
        "the prompt is computed once"
    );
    assert_eq!(load.expected_output_tokens, 400);
    assert_eq!(
        load.active_decode_blocks,
        4 + 4,
        "shared prompt blocks, a tail each"
    );
    // The worker runs four sequences: at its limit of four, the next request waits.
    let err = selector.select(&request(1, 0, 16), now).unwrap_err();
    assert!(matches!(err, NotRouted::AllBusy { .. }));
    routed.guard.first_token();
    assert_eq!(selector.load().load(worker).active_prefill_tokens, 0);
    drop(routed);
    assert_eq!(selector.load().load(worker).active_requests, 0);
    assert!(selector.select(&request(1, 0, 16), now).is_ok());
}

#[test]
fn sessions_stick_to_their_worker_until_the_binding_expires() {
    let mut config = SelectorConfig::new(block_size());
    config.affinity = Some(AffinityConfig {
        ttl: Duration::from_secs(60),
        max_sessions: 16,
    });
    let selector = selector(3, config, KvCost::default());
    let start = Instant::now();
    let in_session = |id: u32| {
        let routing = RoutingHints {
            session_id: Some("chat-1".into()),
            ..Default::default()
        };
        let tokens: Vec<u32> = (id * 100..id * 100 + 48).collect();
        RouteRequest::new(
            &GenerateRequest::new(format!("s{id}"), "m", tokens).with_routing(routing),
            block_size(),
        )
    };
    let first = selector.select(&in_session(1), start).unwrap();
    let mut held = Vec::new();
    for id in 2..6 {
        let next = selector.select(&in_session(id), start).unwrap();
        assert_eq!(next.worker, first.worker, "bound despite its growing load");
        held.push(next);
    }
    // After the TTL the session is routed on cost again: away from the loaded worker.
    let later = selector
        .select(&in_session(7), start + Duration::from_secs(61))
        .unwrap();
    assert_ne!(later.worker, first.worker);
}

#[test]
fn with_kv_events_the_deepest_cached_worker_wins_and_removal_forgets_it() {
    use dynamo_core::{KvEvent, KvEventData, StorageTier};
    let index = SharedIndex::new(block_size());
    let selector = WorkerSelector::new(
        SelectorConfig::new(block_size()),
        KvCost::default(),
        index.clone(),
    );
    for w in 0..3 {
        selector.insert_worker(WorkerId::new(w));
    }
    let prompt = request(1, 256, 0);
    let tokens: Vec<u32> = (0..256).collect();
    index
        .apply(&KvEvent {
            worker: WorkerId::new(2),
            event_id: 0,
            tier: StorageTier::Device,
            data: KvEventData::Stored {
                parent: None,
                block_size: block_size(),
                blocks: dynamo_core::BlockHasher::new(block_size()).hash_blocks(&tokens),
            },
        })
        .unwrap();
    let now = Instant::now();
    let routed = selector.select(&prompt, now).unwrap();
    assert_eq!(routed.worker, WorkerId::new(2));
    assert_eq!(routed.cached.device, 16);
    drop(routed);
    selector.remove_worker(WorkerId::new(2));
    assert!(index.overlaps(&prompt.blocks).is_empty());
    assert_ne!(
        selector.select(&prompt, now).unwrap().worker,
        WorkerId::new(2)
    );
    for w in 0..2 {
        selector.remove_worker(WorkerId::new(w));
    }
    assert_eq!(
        selector.select(&prompt, now).unwrap_err(),
        NotRouted::NoWorkers
    );
}
