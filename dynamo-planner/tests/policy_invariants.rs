//! Invariants of the bounds and the policies, whatever they observe.

use dynamo_core::WorkerRole;
use dynamo_planner::perf::{DecodePoint, PerfProfile, PrefillPoint};
use dynamo_planner::policy::{
    DynamoSla, DynamoSlaConfig, Forecast, LoadConfig, LoadPolicy, Policy, SlaConfig, SlaPolicy,
};
use dynamo_planner::{Bounds, Observation, Replicas, WorkerGpus, WorkerLoad};
use proptest::prelude::*;

fn profile() -> PerfProfile {
    let prefill = vec![
        PrefillPoint {
            input_tokens: 128,
            ttft_ms: 15.0,
            tokens_per_s: 8_000.0,
        },
        PrefillPoint {
            input_tokens: 4096,
            ttft_ms: 300.0,
            tokens_per_s: 14_000.0,
        },
    ];
    let decode = [
        (1024, 1, 8.0, 120.0),
        (1024, 64, 40.0, 1600.0),
        (8192, 1, 10.0, 100.0),
        (8192, 16, 45.0, 350.0),
    ]
    .into_iter()
    .map(
        |(context_tokens, concurrency, itl_ms, tokens_per_s)| DecodePoint {
            context_tokens,
            concurrency,
            kv_usage: 0.5,
            itl_ms,
            tokens_per_s,
        },
    )
    .collect();
    PerfProfile::new(prefill, decode).unwrap_or_else(|e| panic!("the test profile is usable: {e}"))
}

fn replicas() -> impl Strategy<Value = Replicas> {
    prop_oneof![
        (1usize..20).prop_map(Replicas::Aggregated),
        (1usize..20, 1usize..20)
            .prop_map(|(prefill, decode)| Replicas::Disaggregated { prefill, decode }),
    ]
}

fn observations() -> impl Strategy<Value = Observation> {
    let role = prop_oneof![
        Just(WorkerRole::Aggregated),
        Just(WorkerRole::Prefill),
        Just(WorkerRole::Decode)
    ];
    let worker =
        (role, 0u64..50, 0u64..64, 0.0f64..1.0).prop_map(|(role, waiting, running, kv_usage)| {
            WorkerLoad {
                role,
                waiting,
                running,
                kv_usage,
            }
        });
    (
        (0u64..10_000, 0.0f64..20_000.0, 0.0f64..4_000.0, 0.0f64..1.0),
        (
            prop::option::of(0.0f64..5_000.0),
            prop::option::of(0.0f64..500.0),
        ),
        prop::collection::vec(worker, 0..12),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |((requests, isl, osl, hit), (ttft, itl), workers, traffic_unheard)| Observation {
                interval_s: 60.0,
                requests,
                mean_input_tokens: isl,
                mean_output_tokens: osl,
                kv_hit_rate: hit,
                mean_ttft_ms: ttft,
                mean_itl_ms: itl,
                workers,
                traffic_unheard,
            },
        )
}

fn forecast_of(o: &Observation) -> Forecast {
    Forecast {
        requests_per_s: o.requests as f64 / o.interval_s,
        input_tokens: o.mean_input_tokens,
        output_tokens: o.mean_output_tokens,
    }
}

fn sizes(r: Replicas) -> Vec<usize> {
    match r {
        Replicas::Aggregated(n) => vec![n],
        Replicas::Disaggregated { prefill, decode } => vec![prefill, decode],
    }
}

fn same_shape(a: Replicas, b: Replicas) -> bool {
    matches!(
        (a, b),
        (Replicas::Aggregated(_), Replicas::Aggregated(_))
            | (
                Replicas::Disaggregated { .. },
                Replicas::Disaggregated { .. }
            )
    )
}

proptest! {
    #[test]
    fn bounds_are_always_met(
        wanted in replicas(),
        min in 1usize..4,
        extra in 0usize..8,
        spare in 0usize..24,
        (aggregated, prefill, decode) in (1usize..5, 1usize..5, 1usize..5),
    ) {
        let gpus = WorkerGpus { aggregated, prefill, decode };
        let least = gpus.of_pools(match wanted {
            Replicas::Aggregated(_) => Replicas::Aggregated(min),
            Replicas::Disaggregated { .. } => Replicas::Disaggregated { prefill: min, decode: min },
        });
        let bounds = Bounds { min_per_pool: min, max_per_pool: min + extra, budget: least + spare, gpus };
        prop_assert!(bounds.check().is_ok());
        let got = bounds.apply(wanted);
        prop_assert!(same_shape(got, wanted));
        prop_assert!(gpus.of_pools(got) <= bounds.budget, "{got} cost {} GPUs", gpus.of_pools(got));
        for n in sizes(got) {
            prop_assert!(n >= bounds.min_per_pool && n <= bounds.max_per_pool);
        }
        // Within the bounds already, nothing changes.
        let clamped = sizes(wanted).iter().all(|&n| n >= min && n <= min + extra);
        if clamped && gpus.of_pools(wanted) <= bounds.budget {
            prop_assert_eq!(got, wanted);
        }
    }

    #[test]
    fn policies_keep_the_shape_and_explain_with_numbers(
        history in prop::collection::vec(observations(), 1..6),
        start in replicas(),
    ) {
        let mut policies: Vec<Box<dyn Policy>> = vec![
            Box::new(DynamoSla::new(profile(), DynamoSlaConfig::default())),
            Box::new(SlaPolicy::new(profile(), SlaConfig::default())),
            Box::new(LoadPolicy::new(LoadConfig::default())),
        ];
        for policy in &mut policies {
            let mut current = start;
            for o in &history {
                let proposal = if o.traffic_unheard {
                    policy.plan_unheard(o, &forecast_of(o), current)
                } else {
                    policy.plan(o, &forecast_of(o), current)
                };
                prop_assert!(same_shape(proposal.target, current));
                prop_assert!(proposal.reason.chars().any(|c| c.is_ascii_digit()), "{}", proposal.reason);
                let (before, after) = (sizes(current), sizes(proposal.target));
                for (b, a) in before.iter().zip(&after) {
                    // No policy that plans from the traffic shrinks a pool after an interval
                    // whose traffic went partly unheard.
                    if o.traffic_unheard && policy.name() != "load" {
                        prop_assert!(a >= b, "{}", proposal.reason);
                    }
                    // Ours and the load policy shrink one worker at a time (ours except a
                    // decode pool above what the prefill pool can hand over, which shrinks to
                    // that at once); the load policy also grows one at a time.
                    match policy.name() {
                        "sla" => prop_assert!(
                            a + 1 >= *b || proposal.reason.contains("prefill pool hands over"),
                            "{}", proposal.reason
                        ),
                        "load" => prop_assert!(a.abs_diff(*b) <= 1),
                        _ => {}
                    }
                }
                current = Bounds::default().apply(proposal.target);
            }
        }
    }
}
