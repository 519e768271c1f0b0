//! The replay on the shared Mooncake trace: conservation, determinism, and fidelity to NVIDIA
//! Dynamo 1.6.1's own replay (its round-robin figures are deterministic).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

#[path = "support/shared_trace.rs"]
mod shared_trace;

use dynamo_core::{BlockSize, WorkerId};
use dynamo_mocker::{
    CacheKnowledge, Error, HostTierConfig, MembershipChange, Replay, ReplayConfig, ReplayOutcome,
    TraceRequest, load_mooncake,
};
use dynamo_router::{
    ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, RoundRobin, SharedIndex,
};
use tower::discover::Change;

fn trace() -> Vec<TraceRequest> {
    let path = shared_trace::mooncake_trace_path();
    load_mooncake(path).unwrap()
}

fn round_robin(trace: &[TraceRequest], config: &ReplayConfig) -> ReplayOutcome {
    Replay::new(trace, config)
        .label("round-robin")
        .policy(RoundRobin::new())
        .run()
        .unwrap()
}

fn events() -> CacheKnowledge {
    CacheKnowledge::Events(SharedIndex::new(BlockSize::new(64).unwrap()))
}

/// Dynamo's KV cost router, seeded, over an index fed by the workers' events.
fn kv(trace: &[TraceRequest], config: &ReplayConfig, seed: u64) -> ReplayOutcome {
    let policy = KvCost::new(KvCostConfig {
        seed: Some(seed),
        ..Default::default()
    });
    Replay::new(trace, config)
        .label("kv")
        .policy(policy)
        .knowledge(events())
        .run()
        .unwrap()
}

#[test]
fn every_request_completes_once_with_consistent_times() {
    let trace = trace();
    let outcome = kv(&trace[..1500], &ReplayConfig::default(), 3);
    assert_eq!(outcome.summary.completed_requests, 1500);
    for (record, request) in outcome.records.iter().zip(&trace) {
        let first = record.first_token_ms.unwrap();
        let finish = record.finish_ms.unwrap();
        assert!(record.arrival_ms <= first && first <= finish, "{record:?}");
        assert!(record.cached_tokens < request.input_length.max(1));
        assert!(record.worker < 8);
    }
}

#[test]
fn the_same_seed_gives_the_same_summary() {
    let trace = trace();
    let run = || {
        let policy = ExpectedTtft::new(ExpectedTtftConfig {
            seed: Some(11),
            ..Default::default()
        });
        let mut summary = Replay::new(&trace[..800], &ReplayConfig::default())
            .label("ttft")
            .policy(policy)
            .knowledge(events())
            .run()
            .unwrap()
            .summary;
        summary.wall_time_ms = 0.0;
        summary.requests_per_wall_s = 0.0;
        summary
    };
    assert_eq!(run(), run());
}

/// The same with a host tier of 65,536 blocks per worker at 32 GB/s and 131,072 KV bytes per
/// token (`../shared/anchors/dynamo_replay_offload.py`; round-robin is deterministic there too).
#[test]
fn a_host_tier_matches_dynamos_replay_within_a_percent() {
    let mut config = ReplayConfig::default();
    config.engine.host = Some(HostTierConfig {
        blocks: 65_536,
        ..HostTierConfig::default()
    });
    let summary = round_robin(&trace(), &config).summary;
    let close = |ours: f64, theirs: f64| (ours / theirs - 1.0).abs() < 0.01;
    assert!(
        close(summary.prefix_cache_reused_ratio, 0.219_320),
        "{summary:?}"
    );
    assert!(close(summary.host_reused_ratio, 0.107_574), "{summary:?}");
    assert!(close(summary.median_ttft_ms, 100.869), "{summary:?}");
    assert!(close(summary.p90_ttft_ms, 760.111), "{summary:?}");
    assert!(close(summary.p99_ttft_ms, 1383.954), "{summary:?}");
    assert!(close(summary.mean_ttft_ms, 273.555), "{summary:?}");
    assert!(close(summary.mean_tpot_ms, 7.165), "{summary:?}");
}

/// NVIDIA Dynamo 1.6.1's replay of the whole trace, 8 workers, 16384 blocks of 64 tokens,
/// round-robin (deterministic; see `docs/simulator.md`).
#[test]
fn round_robin_matches_dynamos_replay_within_a_percent() {
    let summary = round_robin(&trace(), &ReplayConfig::default()).summary;
    let close = |ours: f64, theirs: f64| (ours / theirs - 1.0).abs() < 0.01;
    assert_eq!(summary.completed_requests, 3993);
    assert!(
        close(summary.prefix_cache_reused_ratio, 0.111_745),
        "{summary:?}"
    );
    assert!(close(summary.median_ttft_ms, 136.630), "{summary:?}");
    assert!(close(summary.p90_ttft_ms, 790.513), "{summary:?}");
    assert!(close(summary.p99_ttft_ms, 1435.142), "{summary:?}");
    assert!(close(summary.mean_tpot_ms, 7.300), "{summary:?}");
    assert!(close(summary.mean_e2e_latency_ms, 1296.670), "{summary:?}");
}

#[test]
fn workers_join_and_leave_at_their_times() {
    let trace = trace();
    let trace = &trace[..1200];
    let middle = trace[600].timestamp;
    let config = ReplayConfig {
        workers: 4,
        membership: vec![
            MembershipChange {
                at_ms: middle,
                change: Change::Insert(WorkerId::new(4), ()),
            },
            MembershipChange {
                at_ms: middle,
                change: Change::Remove(WorkerId::new(0)),
            },
        ],
        ..ReplayConfig::default()
    };
    let outcome = round_robin(trace, &config);
    assert_eq!(outcome.summary.completed_requests, 1200);
    for record in &outcome.records {
        if record.arrival_ms < middle {
            assert!(record.worker < 4, "{record:?}");
        } else if record.arrival_ms > middle {
            assert!((1..5).contains(&record.worker), "{record:?}");
        }
    }
    assert!(
        outcome.records.iter().any(|r| r.worker == 4),
        "the new worker serves"
    );
}

#[test]
fn membership_changes_that_cannot_apply_are_refused_before_the_replay() {
    let trace = trace();
    let trace = &trace[..10];
    let at = |at_ms, change| MembershipChange { at_ms, change };
    let refusal = |membership| {
        let config = ReplayConfig {
            workers: 2,
            membership,
            ..ReplayConfig::default()
        };
        Replay::new(trace, &config).run().err()
    };
    let (one, two) = (WorkerId::new(1), WorkerId::new(2));
    // An id of the initial workers, or one inserted before, is in use.
    assert!(matches!(
        refusal(vec![at(5.0, Change::Insert(one, ()))]),
        Some(Error::WorkerInUse { worker, at_ms: 5.0 }) if worker == one
    ));
    // Even once its worker has left: its requests may still run.
    assert!(matches!(
        refusal(vec![
            at(9.0, Change::Insert(two, ())),
            at(3.0, Change::Insert(two, ())),
            at(6.0, Change::Remove(two)),
        ]),
        Some(Error::WorkerInUse { at_ms: 9.0, .. })
    ));
    // Changes apply in time order: a removal before the insertion removes nobody.
    assert!(matches!(
        refusal(vec![
            at(4.0, Change::Insert(two, ())),
            at(2.0, Change::Remove(two)),
        ]),
        Some(Error::UnknownWorker { at_ms: 2.0, .. })
    ));
    assert!(matches!(
        refusal(vec![at(1.0, Change::Insert(two.with_dp_rank(1), ()))]),
        Some(Error::DataParallelRank { .. })
    ));
    // Leaving twice is harmless; any fresh id may join.
    assert!(
        refusal(vec![
            at(1.0, Change::Remove(one)),
            at(1.0, Change::Remove(one)),
            at(2.0, Change::Insert(WorkerId::new(70), ())),
        ])
        .is_none()
    );
}

#[test]
fn an_arrival_speedup_that_is_not_positive_is_refused() {
    let trace = trace();
    for value in [0.0, -2.0, f64::NAN] {
        let config = ReplayConfig {
            arrival_speedup: value,
            ..ReplayConfig::default()
        };
        let refused = Replay::new(&trace[..10], &config).run().err();
        assert!(
            matches!(refused, Some(Error::ArrivalSpeedup { .. })),
            "{value}: {refused:?}"
        );
    }
}

#[test]
fn lagged_events_and_a_concurrency_cap_still_complete_every_request_in_order() {
    let trace = trace();
    let config = ReplayConfig {
        event_lag_ms: 50.0,
        max_in_flight: Some(6),
        ..ReplayConfig::default()
    };
    let outcome = kv(&trace[..800], &config, 5);
    assert_eq!(outcome.summary.completed_requests, 800);
    for record in &outcome.records {
        let first = record.first_token_ms.unwrap();
        assert!(record.arrival_ms <= first && first <= record.finish_ms.unwrap());
    }
    // Held-back arrivals wait for a place: the cap shows in the time to first token.
    let uncapped = kv(&trace[..800], &ReplayConfig::default(), 5);
    assert!(outcome.summary.mean_ttft_ms > uncapped.summary.mean_ttft_ms);
}
