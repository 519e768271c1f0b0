//! Disaggregated replays: separate prefill and decode pools, the KV hand-over, placement.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

#[path = "support/shared_trace.rs"]
mod shared_trace;

use dynamo_core::BlockSize;
use dynamo_mocker::{
    CacheKnowledge, DisaggConfig, Error, HandedOverKv, Replay, ReplayConfig, ReplayOutcome,
    TraceRequest, TransferConfig, load_mooncake,
};
use dynamo_router::disagg::{Placement, PlacementContext, PlacementPolicy};
use dynamo_router::{KvCost, KvCostConfig, SharedIndex};

fn events() -> CacheKnowledge {
    CacheKnowledge::Events(SharedIndex::new(BlockSize::new(64).unwrap()))
}

fn kv() -> KvCost {
    KvCost::new(KvCostConfig {
        seed: Some(7),
        ..KvCostConfig::default()
    })
}

fn disagg(prefill: usize, decode: usize, transfer: TransferConfig) -> ReplayConfig {
    ReplayConfig {
        disagg: Some(DisaggConfig {
            prefill_workers: prefill,
            decode_workers: decode,
            transfer,
            handed_over_kv: HandedOverKv::Discarded,
        }),
        ..ReplayConfig::default()
    }
}

/// The first `n` requests of the shared Mooncake trace.
fn mooncake(n: usize) -> Vec<TraceRequest> {
    let path = shared_trace::mooncake_trace_path();
    let mut trace = load_mooncake(path).unwrap();
    trace.truncate(n);
    trace
}

fn replay_kv(trace: &[TraceRequest], config: &ReplayConfig) -> ReplayOutcome {
    Replay::new(trace, config)
        .policy(kv())
        .knowledge(events())
        .run()
        .unwrap()
}

/// Two requests a second apart; the second repeats the first one's 1,024-token prompt and
/// adds a block.
fn repeated_prompt() -> Vec<TraceRequest> {
    let request = |timestamp, hash_ids: Vec<u64>| TraceRequest {
        timestamp,
        input_length: hash_ids.len() as u64 * 512,
        output_length: 10,
        hash_ids,
    };
    vec![request(0.0, vec![1, 2]), request(1000.0, vec![1, 2, 3])]
}

/// Every prompt on the decode worker.
#[derive(Debug)]
struct LocalOnly;

impl PlacementPolicy for LocalOnly {
    fn place(&self, _request: &PlacementContext) -> Placement {
        Placement::Local
    }
}

#[test]
fn a_disaggregated_replay_is_deterministic_and_loses_no_request() {
    let trace = mooncake(600);
    let config = disagg(2, 3, TransferConfig::default());
    let first = replay_kv(&trace, &config);
    let second = replay_kv(&trace, &config);
    assert_eq!(first.records, second.records);
    assert_eq!(first.summary.completed_requests, trace.len());
    let phases = first.summary.disagg.unwrap();
    assert_eq!(phases.remote_requests, trace.len());
    assert_eq!(phases.local_requests, 0);
    for record in &first.records {
        let prefill = record.prefill_worker.unwrap();
        assert!(prefill < 2, "{record:?}");
        assert!((2..5).contains(&record.worker), "{record:?}");
        let done = record.prefill_done_ms.unwrap();
        let kv_arrival = record.kv_arrival_ms.unwrap();
        let first_token = record.first_token_ms.unwrap();
        assert!(record.arrival_ms < done && done == kv_arrival && kv_arrival < first_token);
        assert!(first_token <= record.finish_ms.unwrap());
    }
}

#[test]
fn local_prefill_everywhere_is_the_aggregated_replay_of_the_decode_pool() {
    let trace = mooncake(600);
    let aggregated = replay_kv(
        &trace,
        &ReplayConfig {
            workers: 3,
            ..ReplayConfig::default()
        },
    );
    let local = Replay::new(&trace, &disagg(2, 3, TransferConfig::default()))
        .policy(kv())
        .knowledge(events())
        .decode_policy(kv(), events())
        .placement(LocalOnly)
        .run()
        .unwrap();
    for (agg, local) in aggregated.records.iter().zip(&local.records) {
        // The decode workers are numbered after the two prefill workers.
        let renumbered = dynamo_mocker::RequestRecord {
            worker: local.worker - 2,
            ..local.clone()
        };
        assert_eq!(agg, &renumbered);
    }
    assert_eq!(
        local.summary.prefix_cache_reused_ratio,
        aggregated.summary.prefix_cache_reused_ratio
    );
    assert_eq!(local.summary.disagg.unwrap().local_requests, trace.len());
}

#[test]
fn the_hand_over_adds_its_transfer_time_to_the_first_token() {
    // One request of 1,024 tokens and 10 output tokens on an idle 1P+1D pair.
    let trace = vec![TraceRequest {
        timestamp: 0.0,
        input_length: 1024,
        output_length: 10,
        hash_ids: vec![1, 2],
    }];
    let instant = replay_kv(&trace, &disagg(1, 1, TransferConfig::default()));
    let record = &instant.records[0];
    // As in NVIDIA Dynamo 1.6.1's replay: the prefill step (32.49 ms), then one decode step
    // on the decode worker samples the first token, and nine more the rest.
    let prefill_ms = 4.209989e-7 * 1024.0 * 1024.0 + 1.518344e-2 * 1024.0 + 16.50142;
    let decode_ms =
        5.74 + 54.01 * 1024.0 / (16384.0 * 64.0) - 25.74 * (1024.0f64 / (16384.0 * 64.0)).powi(2);
    assert!((record.prefill_done_ms.unwrap() - prefill_ms).abs() < 1e-9);
    assert!((record.first_token_ms.unwrap() - (prefill_ms + decode_ms)).abs() < 1e-6);
    // Dynamo measured 38.283 ms and 90.420 ms.
    assert!((record.ttft_ms().unwrap() - 38.283).abs() < 0.01);
    assert!((record.e2e_ms().unwrap() - 90.420).abs() < 0.01);

    let link = TransferConfig {
        bandwidth_gb_per_s: 1.0,
        latency_ms: 2.0,
        kv_bytes_per_token: 131_072,
    };
    let slow = replay_kv(&trace, &disagg(1, 1, link));
    let transfer_ms = link.time_ms(1024, BlockSize::new(64).unwrap());
    // 1,024 tokens of 128 KiB at 1 GB/s, and the latency: 136.2 ms (Dynamo: 134.2 without it).
    assert!((transfer_ms - 136.217728).abs() < 1e-6);
    let delayed = &slow.records[0];
    assert!((delayed.ttft_ms().unwrap() - record.ttft_ms().unwrap() - transfer_ms).abs() < 1e-6);
    let phases = slow.summary.disagg.unwrap();
    assert!((phases.transfer.mean_ms - transfer_ms).abs() < 1e-6);
    assert!((phases.prefill.mean_ms - prefill_ms).abs() < 1e-6);
    assert!((phases.decode_wait.mean_ms - decode_ms).abs() < 1e-6);
}

#[test]
fn the_prefill_worker_caches_and_reports_the_reuse() {
    // The second request repeats the first one's prompt and adds a block: the prefill worker
    // finds 1,024 tokens cached (Dynamo's replay reports the same, 0.4 of the prompts).
    let trace = repeated_prompt();
    let outcome = replay_kv(&trace, &disagg(2, 2, TransferConfig::default()));
    assert_eq!(outcome.records[1].cached_tokens, 1024);
    assert_eq!(
        outcome.records[1].prefill_worker,
        outcome.records[0].prefill_worker
    );
    assert!((outcome.summary.prefix_cache_reused_ratio - 0.4).abs() < 1e-12);
}

#[test]
fn an_empty_pool_is_refused() {
    let trace = mooncake(3);
    for (prefill, decode) in [(0, 2), (2, 0)] {
        let error = Replay::new(&trace, &disagg(prefill, decode, TransferConfig::default()))
            .run()
            .unwrap_err();
        assert!(matches!(error, Error::Disaggregation { .. }), "{error}");
    }
}

#[test]
fn round_robin_over_both_pools_reproduces_dynamos_disaggregated_replay() {
    // NVIDIA Dynamo 1.6.1, `dynamo_replay_disagg.py TRACE 2 6` in round-robin mode, which is
    // deterministic: reuse 0.149848, TTFT p50 393.20, p90 1409.48, p99 3842.35 ms, mean TPOT
    // 6.63465 ms, duration 1,022,604.28 ms.
    let trace = mooncake(usize::MAX);
    let outcome = Replay::new(&trace, &disagg(2, 6, TransferConfig::default()))
        .handoff_policy(dynamo_router::RoundRobin::new())
        .run()
        .unwrap();
    let summary = &outcome.summary;
    let close = |ours: f64, theirs: f64| (ours - theirs).abs() / theirs < 0.01;
    assert_eq!(summary.completed_requests, trace.len());
    assert!(
        close(summary.prefix_cache_reused_ratio, 0.149848),
        "{summary:?}"
    );
    assert!(close(summary.median_ttft_ms, 393.20), "{summary:?}");
    assert!(close(summary.p90_ttft_ms, 1409.48), "{summary:?}");
    assert!(close(summary.p99_ttft_ms, 3842.35), "{summary:?}");
    assert!(close(summary.mean_tpot_ms, 6.63465), "{summary:?}");
    assert!(close(summary.duration_ms, 1_022_604.28), "{summary:?}");
}

/// The first request's prompt is handed over; the second, which repeats it, stays local.
#[derive(Debug)]
struct RemoteThenLocal(std::sync::atomic::AtomicBool);

impl PlacementPolicy for RemoteThenLocal {
    fn place(&self, _request: &PlacementContext) -> Placement {
        if self.0.swap(true, std::sync::atomic::Ordering::Relaxed) {
            Placement::Local
        } else {
            Placement::Remote
        }
    }
}

#[test]
fn a_decode_worker_keeps_handed_over_prompts_cached_only_when_told() {
    let trace = repeated_prompt();
    let cached_by_decode = |handed_over_kv| {
        let mut config = disagg(1, 1, TransferConfig::default());
        if let Some(setup) = &mut config.disagg {
            setup.handed_over_kv = handed_over_kv;
        }
        let outcome = Replay::new(&trace, &config)
            .policy(kv())
            .knowledge(events())
            .placement(RemoteThenLocal(Default::default()))
            .run()
            .unwrap();
        assert_eq!(outcome.records[0].prefill_worker, Some(0));
        assert_eq!(outcome.records[1].prefill_worker, None);
        outcome.records[1].cached_tokens
    };
    // As NVIDIA Dynamo's mocker: the decode worker freed the first prompt's blocks.
    assert_eq!(cached_by_decode(HandedOverKv::Discarded), 0);
    assert_eq!(cached_by_decode(HandedOverKv::Cached), 1024);
}

#[test]
fn conditional_placement_over_a_slow_link_under_a_cap_loses_no_request() {
    let trace = mooncake(600);
    let mut config = disagg(
        2,
        3,
        TransferConfig {
            bandwidth_gb_per_s: 5.0,
            latency_ms: 1.0,
            kv_bytes_per_token: 131_072,
        },
    );
    config.max_in_flight = Some(16);
    let run = || {
        Replay::new(&trace, &config)
            .policy(kv())
            .knowledge(events())
            .decode_policy(kv(), events())
            .placement(dynamo_router::disagg::ExpectedTtftPlacement::default())
            .run()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.records, run().records);
    assert_eq!(first.summary.completed_requests, trace.len());
    let phases = first.summary.disagg.unwrap();
    assert_eq!(phases.remote_requests + phases.local_requests, trace.len());
    assert!(
        phases.remote_requests > 0 && phases.local_requests > 0,
        "{phases:?}"
    );
    for record in first.records.iter().filter(|r| r.prefill_worker.is_some()) {
        let transfer = record.kv_arrival_ms.unwrap() - record.prefill_done_ms.unwrap();
        let expected = config
            .disagg
            .unwrap()
            .transfer
            .time_ms(record.input_tokens, BlockSize::new(64).unwrap());
        assert!((transfer - expected).abs() < 1e-6, "{record:?}");
    }
}

#[test]
fn a_flexible_prefill_pool_serves_whole_requests_and_counts_their_first_tokens() {
    let trace = mooncake(600);
    let config = disagg(2, 3, TransferConfig::default());
    let flexible = dynamo_router::disagg::ExpectedTtftPlacement {
        prefill_workers_decode: true,
        ..dynamo_router::disagg::ExpectedTtftPlacement::default()
    };
    let outcome = Replay::new(&trace, &config)
        .policy(kv())
        .knowledge(events())
        .decode_policy(kv(), events())
        .placement(flexible)
        .run()
        .unwrap();
    assert_eq!(outcome.summary.completed_requests, trace.len());
    // Served whole on a prefill worker (ids 0 and 1): no hand-over, a first token of their own.
    let whole: Vec<_> = outcome
        .records
        .iter()
        .filter(|r| r.worker < 2 && r.prefill_worker.is_none())
        .collect();
    assert!(!whole.is_empty());
    for record in whole {
        let first = record.first_token_ms.unwrap();
        assert!(first > record.arrival_ms && record.finish_ms.unwrap() >= first);
        assert!(record.kv_arrival_ms.is_none(), "{record:?}");
    }
    // Every other request ends on a decode worker.
    assert!(
        outcome
            .records
            .iter()
            .filter(|r| r.prefill_worker.is_some())
            .all(|r| r.worker >= 2)
    );
}

/// The expected-TTFT router, seeded.
fn ttft() -> dynamo_router::ExpectedTtft {
    dynamo_router::ExpectedTtft::new(dynamo_router::ExpectedTtftConfig {
        seed: Some(7),
        ..dynamo_router::ExpectedTtftConfig::default()
    })
}

/// `trace` through 2 prefill and 3 decode workers, both pools routed by [`ttft`], placed by
/// `placement`.
fn ttft_pools(trace: &[TraceRequest], placement: impl PlacementPolicy) -> ReplayOutcome {
    Replay::new(trace, &disagg(2, 3, TransferConfig::default()))
        .policy(ttft())
        .knowledge(events())
        .decode_policy(ttft(), events())
        .placement(placement)
        .run()
        .unwrap()
}

#[test]
fn a_pool_placed_by_the_router_s_cost_serves_as_one_aggregated_pool() {
    let trace = mooncake(600);
    let aggregated = Replay::new(
        &trace,
        &ReplayConfig {
            workers: 5,
            ..ReplayConfig::default()
        },
    )
    .policy(ttft())
    .knowledge(events())
    .run()
    .unwrap();
    let pools = ttft_pools(
        &trace,
        dynamo_router::disagg::RouterCostPlacement::default(),
    );
    assert_eq!(pools.summary.completed_requests, trace.len());
    // Nothing is handed over; both pools serve whole requests.
    assert!(pools.records.iter().all(|r| r.prefill_worker.is_none()));
    assert!(pools.records.iter().any(|r| r.worker < 2));
    assert!(pools.records.iter().any(|r| r.worker >= 2));
    // The prompts land where one router over the five workers would put them, tie-breaks
    // aside (10.3% of prompt tokens reused here, 9.9% by the aggregated replay): no less.
    let (reuse, aggregated_reuse) = (
        pools.summary.prefix_cache_reused_ratio,
        aggregated.summary.prefix_cache_reused_ratio,
    );
    assert!(
        reuse >= 0.97 * aggregated_reuse,
        "{reuse} against {aggregated_reuse}"
    );
}

#[test]
fn a_stall_free_pool_computes_prompts_only_on_decode_workers_that_decode_nothing() {
    let trace = mooncake(600);
    let pools = ttft_pools(&trace, dynamo_router::disagg::StallFreePlacement::default());
    assert_eq!(pools.summary.completed_requests, trace.len());
    let records = &pools.records;
    // Prefill workers (ids 0 and 1) only prefill.
    assert!(records.iter().all(|r| r.worker >= 2));
    let local: Vec<_> = records
        .iter()
        .filter(|r| r.prefill_worker.is_none())
        .collect();
    assert!(!local.is_empty() && local.len() < records.len());
    // When a prompt stayed on its decode worker, nothing else was running there: each other
    // request occupies its decode worker from its arrival there (its own arrival, or its KV's)
    // to its last token.
    for r in &local {
        let busy = records
            .iter()
            .filter(|o| o.index != r.index && o.worker == r.worker);
        for o in busy {
            let start = o.kv_arrival_ms.unwrap_or(o.arrival_ms);
            let finish = o.finish_ms.unwrap();
            assert!(
                !(start < r.arrival_ms && r.arrival_ms < finish),
                "request {} computed on worker {} while request {} ran there",
                r.index,
                r.worker,
                o.index
            );
        }
    }
}

/// A long answer's prompt on the decode worker, every other prompt remote, with or without
/// the prefill worker pulling the decode worker's cached prefix.
#[derive(Debug)]
struct FirstLocal {
    pull: bool,
}

impl PlacementPolicy for FirstLocal {
    fn place(&self, request: &PlacementContext) -> Placement {
        if request.prompt_tokens == 2048 {
            Placement::Local
        } else {
            Placement::Remote
        }
    }

    fn pulls_prefix(&self) -> bool {
        self.pull
    }
}

#[test]
fn a_prefill_worker_that_pulls_the_decode_worker_s_prefix_computes_only_the_rest() {
    // The decode worker computes and caches four trace blocks, then decodes for seconds; the
    // second prompt extends them by a block and is handed to the prefill worker.
    let trace = vec![
        TraceRequest {
            timestamp: 0.0,
            input_length: 2048,
            output_length: 2000,
            hash_ids: vec![1, 2, 3, 4],
        },
        TraceRequest {
            timestamp: 1000.0,
            input_length: 2560,
            output_length: 10,
            hash_ids: vec![1, 2, 3, 4, 5],
        },
    ];
    let link = TransferConfig {
        bandwidth_gb_per_s: 50.0,
        ..TransferConfig::default()
    };
    let run = |pull| {
        Replay::new(&trace, &disagg(1, 1, link))
            .policy(kv())
            .knowledge(events())
            .placement(FirstLocal { pull })
            .run()
            .unwrap()
    };
    let (pulled, computed) = (run(true), run(false));
    for outcome in [&pulled, &computed] {
        assert_eq!(outcome.summary.completed_requests, 2);
        assert_eq!(outcome.records[0].prefill_worker, None);
        assert_eq!(outcome.records[1].prefill_worker, Some(0));
    }
    let (with, without) = (&pulled.records[1], &computed.records[1]);
    // The pulled prefix counts as found; without it the prefill worker computes everything.
    assert_eq!(with.cached_tokens, 2048);
    assert_eq!(without.cached_tokens, 0);
    let prefill = |r: &dynamo_mocker::RequestRecord| r.prefill_done_ms.unwrap() - r.arrival_ms;
    assert!(
        prefill(with) < 0.5 * prefill(without),
        "{} against {} ms",
        prefill(with),
        prefill(without)
    );
    // The prefix's time on the link is added to the hand-over's.
    let block = BlockSize::new(64).unwrap();
    let on_link =
        |r: &dynamo_mocker::RequestRecord| r.kv_arrival_ms.unwrap() - r.prefill_done_ms.unwrap();
    let expected = link.time_ms(2560, block) + link.time_ms(2048, block);
    assert!((on_link(with) - expected).abs() < 1e-6);
    assert!((on_link(without) - link.time_ms(2560, block)).abs() < 1e-6);
}

#[test]
fn a_stall_free_pool_that_pulls_prefixes_reuses_more_and_still_stalls_no_decode() {
    let trace = mooncake(600);
    let config = dynamo_router::ExpectedTtftConfig {
        seed: Some(7),
        ..dynamo_router::ExpectedTtftConfig::default()
    };
    let plain = ttft_pools(
        &trace,
        dynamo_router::disagg::StallFreePlacement::new(config),
    );
    let pulling = ttft_pools(
        &trace,
        dynamo_router::disagg::StallFreePlacement::new(config).pulling_prefix(),
    );
    assert_eq!(pulling.summary.completed_requests, trace.len());
    let records = &pulling.records;
    assert!(records.iter().all(|r| r.worker >= 2));
    // No prompt computed on a decode worker while another request ran there.
    for r in records.iter().filter(|r| r.prefill_worker.is_none()) {
        assert!(!records.iter().any(|o| {
            o.index != r.index
                && o.worker == r.worker
                && o.kv_arrival_ms.unwrap_or(o.arrival_ms) < r.arrival_ms
                && r.arrival_ms < o.finish_ms.unwrap()
        }));
    }
    let (reuse, plain_reuse) = (
        pulling.summary.prefix_cache_reused_ratio,
        plain.summary.prefix_cache_reused_ratio,
    );
    assert!(reuse > 1.05 * plain_reuse, "{reuse} against {plain_reuse}");
}
