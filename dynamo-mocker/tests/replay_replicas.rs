//! Router replicas in the replay, on the shared Mooncake trace: sharing their state without a
//! delay, replicas route exactly as one router does; alone, they route differently and worse.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::path::PathBuf;

#[path = "support/shared_trace.rs"]
mod shared_trace;

use dynamo_core::BlockSize;
use dynamo_mocker::{
    CacheKnowledge, DisaggConfig, Error, HandedOverKv, Replay, ReplayConfig, ReplayOutcome,
    RouterReplicas, TraceRequest, TransferConfig, load_mooncake,
};
use dynamo_router::{ApproxConfig, KvCost, KvCostConfig, SharedIndex};

fn trace() -> Vec<TraceRequest> {
    let path = shared_trace::mooncake_trace_path();
    let mut trace = load_mooncake(path).unwrap();
    trace.truncate(1200);
    trace
}

fn replay(
    trace: &[TraceRequest],
    knowledge: CacheKnowledge,
    replicas: RouterReplicas,
) -> ReplayOutcome {
    let config = ReplayConfig::default();
    let policy = KvCost::new(KvCostConfig {
        seed: Some(7),
        ..Default::default()
    });
    Replay::new(trace, &config)
        .policy(policy)
        .knowledge(knowledge)
        .router_replicas(replicas)
        .run()
        .unwrap()
}

fn events() -> CacheKnowledge {
    CacheKnowledge::Events(SharedIndex::new(BlockSize::new(64).unwrap()))
}

fn workers(outcome: &ReplayOutcome) -> Vec<u64> {
    outcome.records.iter().map(|r| r.worker).collect()
}

#[test]
fn replicas_that_share_without_delay_route_as_one_router() {
    let trace = trace();
    let one = replay(&trace, events(), RouterReplicas::default());
    let shared = RouterReplicas {
        count: 4,
        ..RouterReplicas::default()
    };
    let four = replay(&trace, events(), shared);
    assert_eq!(workers(&one), workers(&four));
    let alone = RouterReplicas {
        count: 4,
        share: false,
        delay_ms: 0.0,
    };
    let four_alone = replay(&trace, events(), alone);
    assert_ne!(workers(&one), workers(&four_alone));
}

#[test]
fn approximate_replicas_alone_lose_the_cache_hits_that_sharing_keeps() {
    let trace = trace();
    let approx = || CacheKnowledge::Approximate(ApproxConfig::default());
    let reuse = |replicas| {
        replay(&trace, approx(), replicas)
            .summary
            .prefix_cache_reused_ratio
    };
    let one = reuse(RouterReplicas::default());
    let shared = reuse(RouterReplicas {
        count: 8,
        share: true,
        delay_ms: 5.0,
    });
    let alone = reuse(RouterReplicas {
        count: 8,
        share: false,
        delay_ms: 0.0,
    });
    assert!(shared > 0.95 * one, "shared {shared} against one {one}");
    assert!(alone < 0.8 * one, "alone {alone} against one {one}");
}

#[test]
fn replicas_are_refused_where_they_cannot_route() {
    let trace = trace();
    let config = ReplayConfig {
        disagg: Some(DisaggConfig {
            prefill_workers: 1,
            decode_workers: 1,
            transfer: TransferConfig::default(),
            handed_over_kv: HandedOverKv::Discarded,
        }),
        ..ReplayConfig::default()
    };
    let replicas = RouterReplicas {
        count: 2,
        ..RouterReplicas::default()
    };
    let refused = Replay::new(&trace[..10], &config)
        .router_replicas(replicas)
        .run();
    assert!(matches!(refused, Err(Error::RouterReplicas { .. })));
    let none = RouterReplicas {
        count: 0,
        ..RouterReplicas::default()
    };
    let refused = Replay::new(&trace[..10], &ReplayConfig::default())
        .router_replicas(none)
        .run();
    assert!(matches!(refused, Err(Error::RouterReplicas { .. })));
}

/// `dynamo-replay`, run as a user runs it.
fn replay_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-replay"))
        .args(args)
        .output()
        .expect("dynamo-replay runs")
}

#[test]
fn the_command_runs_each_replica_count_shared_or_alone() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay_replicas_cli.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"timestamp": {}, "input_length": 1024, "output_length": 4, "hash_ids": [1, {}]}}"#,
                i * 100,
                i + 2
            )
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let path = path.display().to_string();
    let common = ["--trace", &path, "--workers", "2", "--router", "approx-kv"];
    let run = |extra: &[&str]| {
        let output = replay_cli(&[&common[..], extra].concat());
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let shared = run(&["--router-replicas", "1,2", "--share-delay-ms", "5"]);
    assert!(
        shared.contains("approx-kv x1 ") && shared.contains("approx-kv x2 "),
        "{shared}"
    );
    let alone = run(&["--router-replicas", "2", "--no-share"]);
    assert!(alone.contains("approx-kv x2 alone"), "{alone}");
    let refused = replay_cli(&[&common[..], &["--router-replicas", "0"]].concat());
    assert_eq!(refused.status.code(), Some(2));
}
