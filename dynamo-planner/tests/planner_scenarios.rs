//! The planner over scripted intervals: steady load, a burst, and its end.

use dynamo_core::WorkerRole;
use dynamo_planner::perf::{DecodePoint, PerfProfile, PrefillPoint};
use dynamo_planner::policy::{
    DynamoSla, DynamoSlaConfig, Forecast, Policy, PoolRule, Proposal, Rule, SlaConfig, SlaPolicy,
};
use dynamo_planner::predict::PredictorKind;
use dynamo_planner::{
    Bounds, Observation, Planner, PlannerConfig, Replicas, WorkerGpus, WorkerLoad,
};

/// One worker: 10 000 prompt tokens/s; 600 output tokens/s within 50 ms ITL at 2k context.
fn profile() -> PerfProfile {
    let prefill = vec![
        PrefillPoint {
            input_tokens: 256,
            ttft_ms: 30.0,
            tokens_per_s: 8_500.0,
        },
        PrefillPoint {
            input_tokens: 2048,
            ttft_ms: 200.0,
            tokens_per_s: 10_000.0,
        },
        PrefillPoint {
            input_tokens: 8192,
            ttft_ms: 900.0,
            tokens_per_s: 9_000.0,
        },
    ];
    let decode = [(1, 10.0, 100.0), (16, 30.0, 530.0), (48, 80.0, 600.0)]
        .into_iter()
        .flat_map(|(concurrency, itl_ms, tokens_per_s)| {
            [(2048, 1.0), (8192, 1.5)].map(|(context_tokens, slower)| DecodePoint {
                context_tokens,
                concurrency,
                kv_usage: (0.015 * f64::from(concurrency) * slower).min(1.0),
                itl_ms: itl_ms * slower,
                tokens_per_s: tokens_per_s / slower,
            })
        })
        .collect::<Vec<_>>();
    let mut decode = decode;
    decode.sort_by_key(|p| (p.context_tokens, p.concurrency));
    PerfProfile::new(prefill, decode).unwrap_or_else(|e| panic!("usable profile: {e}"))
}

fn planner(policy: impl Policy + 'static) -> Planner {
    let config = PlannerConfig {
        interval_s: 60.0,
        bounds: Bounds {
            min_per_pool: 1,
            max_per_pool: 16,
            budget: 16,
            ..Bounds::default()
        },
        advisory: false,
    };
    let kind = PredictorKind::Kalman;
    Planner::new(config, policy, move || kind.build()).unwrap_or_else(|e| panic!("valid: {e}"))
}

/// An interval at `rate` req/s; over capacity it shows queues and a TTFT miss.
fn interval(rate: f64, workers: usize, waiting: u64, ttft_ms: f64) -> Observation {
    Observation {
        interval_s: 60.0,
        requests: (rate * 60.0).round() as u64,
        mean_input_tokens: 2000.0,
        mean_output_tokens: 250.0,
        kv_hit_rate: 0.5,
        mean_ttft_ms: Some(ttft_ms),
        mean_itl_ms: Some(15.0),
        workers: vec![
            WorkerLoad {
                role: WorkerRole::Aggregated,
                waiting,
                running: 16,
                kv_usage: 0.4,
            };
            workers
        ],
        traffic_unheard: false,
    }
}

fn sla() -> SlaPolicy {
    SlaPolicy::new(profile(), SlaConfig::default())
}

#[test]
fn a_steady_noisy_load_keeps_a_steady_size() {
    let mut p = planner(sla());
    let mut current = Replicas::Aggregated(1);
    let mut sizes = Vec::new();
    for i in 0..30 {
        // 4 req/s ± 10%.
        let rate = 4.0 * (1.0 + 0.1 * [1.0, -1.0, 0.5, -0.5, 0.0][i % 5]);
        current = p
            .tick(&interval(rate, current.total(), 0, 150.0), current)
            .target;
        sizes.push(current.total());
    }
    let settled = &sizes[5..];
    assert!(settled.iter().all(|&n| n == settled[0]), "{sizes:?}");
}

/// A frontend cut off from the planner: its intervals show the workers busy and few of the
/// arrivals. Read as heard, they shrink the pool; marked unheard, the `sla` policy keeps it
/// while the workers' queues stay within their limits, grows it when they pass them, and its
/// forecast does not move.
#[test]
fn intervals_with_traffic_unheard_never_shrink_and_grow_on_the_workers_queues() {
    let settle = |p: &mut Planner| {
        let mut current = Replicas::Aggregated(1);
        for _ in 0..10 {
            current = p
                .tick(&interval(8.0, current.total(), 0, 150.0), current)
                .target;
        }
        current
    };
    let quiet = |current: Replicas, waiting: u64, unheard: bool| Observation {
        traffic_unheard: unheard,
        ..interval(0.0, current.total(), waiting, 150.0)
    };

    let mut heard = planner(sla());
    let mut current = settle(&mut heard);
    let settled = current.total();
    assert!(settled >= 3, "{settled}");
    for _ in 0..10 {
        current = heard.tick(&quiet(current, 0, false), current).target;
    }
    assert!(current.total() < settled, "{settled} → {current:?}");

    let mut unheard = planner(sla());
    let mut current = settle(&mut unheard);
    let forecast = unheard
        .tick(&interval(8.0, current.total(), 0, 150.0), current)
        .forecast;
    for _ in 0..10 {
        let decision = unheard.tick(&quiet(current, 0, true), current);
        assert_eq!(decision.target, current, "{}", decision.reason);
        assert_eq!(decision.forecast, forecast);
        let kept = [PoolRule::new(WorkerRole::Aggregated, Rule::Unheard)];
        assert_eq!(decision.rules, kept);
        current = decision.target;
    }
    let queued = unheard.tick(&quiet(current, 10, true), current);
    assert!(queued.target.total() > current.total(), "{}", queued.reason);
    assert!(queued.reason.contains("not all heard"), "{}", queued.reason);
    let grown = [PoolRule::new(WorkerRole::Aggregated, Rule::Pressure)];
    assert_eq!(queued.rules, grown);
}

#[test]
fn a_burst_is_met_at_once_and_its_end_slowly() {
    let mut p = planner(sla());
    let mut current = Replicas::Aggregated(1);
    for _ in 0..5 {
        current = p
            .tick(&interval(2.0, current.total(), 0, 150.0), current)
            .target;
    }
    let calm = current.total();
    // Five times the load: queues of 10 per worker and TTFT four times the target.
    let burst = p.tick(&interval(10.0, calm, 10, 2000.0), current);
    assert!(
        burst.target.total() >= 2 * calm,
        "{calm} → {}: {}",
        burst.target.total(),
        burst.reason
    );
    assert_eq!(burst.rules[0].rule, Rule::Pressure, "{}", burst.reason);
    current = burst.target;
    let peak = current.total();
    let (mut sizes, mut rules) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let decision = p.tick(&interval(2.0, current.total(), 0, 150.0), current);
        current = decision.target;
        sizes.push(current.total());
        rules.push(decision.rules[0].rule);
    }
    // The burst's plan holds the pool for the window, then the calm time counts, then one
    // worker goes at each step that shrinks it.
    assert_eq!(rules[0], Rule::Window, "{rules:?}");
    for (pair, rule) in sizes.windows(2).zip(&rules[1..]) {
        assert_eq!(
            pair[1] < pair[0],
            *rule == Rule::Shrink,
            "{sizes:?} {rules:?}"
        );
    }
    assert!(rules.contains(&Rule::Calming), "{rules:?}");
    // Down one at a time, never below the calm size's plan.
    for pair in sizes.windows(2) {
        assert!(pair[1] + 1 >= pair[0], "{sizes:?}");
    }
    assert!(sizes[0] == peak && sizes[9] < peak, "{peak} then {sizes:?}");
}

#[test]
fn ours_plans_less_prefill_than_dynamo_for_cached_prompts() {
    // Multi-turn: 90% of each prompt is cached, so little prefill is needed.
    let mut observed = interval(8.0, 4, 0, 150.0);
    observed.kv_hit_rate = 0.9;
    let split = Replicas::Disaggregated {
        prefill: 2,
        decode: 2,
    };
    let mut ours = planner(sla());
    let mut dynamo = planner(DynamoSla::new(profile(), DynamoSlaConfig::default()));
    let (a, b) = (ours.tick(&observed, split), dynamo.tick(&observed, split));
    let prefill = |r: Replicas| match r {
        Replicas::Disaggregated { prefill, .. } => prefill,
        Replicas::Aggregated(n) => n,
    };
    assert!(
        prefill(a.target) <= prefill(b.target),
        "ours: {}; dynamo: {}",
        a.reason,
        b.reason
    );
}

/// A policy that always asks for the same pools.
struct Asks(Replicas);

impl Policy for Asks {
    fn name(&self) -> &'static str {
        "asks"
    }

    fn plan(&mut self, _: &Observation, _: &Forecast, _: Replicas) -> Proposal {
        Proposal::new(self.0, format!("asks for {}", self.0))
    }
}

#[test]
fn a_decision_the_budget_cuts_says_so_and_fits_the_gpus() {
    let bounds = Bounds {
        budget: 12,
        gpus: WorkerGpus {
            decode: 4,
            ..WorkerGpus::default()
        },
        ..Bounds::default()
    };
    let config = PlannerConfig {
        bounds,
        ..PlannerConfig::default()
    };
    let asked = Replicas::Disaggregated {
        prefill: 6,
        decode: 3,
    };
    let kind = PredictorKind::Constant;
    let mut planner = Planner::new(config, Asks(asked), move || kind.build())
        .unwrap_or_else(|e| panic!("valid: {e}"));
    let decision = planner.tick(&interval(5.0, 2, 0, 200.0), asked);
    // 6 + 3 × 4 = 18 GPUs over 12: prefill 6 × 12/18 = 4, decode the 8 left, 2.
    let cut = Replicas::Disaggregated {
        prefill: 4,
        decode: 2,
    };
    assert_eq!(decision.target, cut);
    let by_bounds = [
        PoolRule::new(WorkerRole::Prefill, Rule::Bounds),
        PoolRule::new(WorkerRole::Decode, Rule::Bounds),
    ];
    assert_eq!(decision.rules, by_bounds);
    assert_eq!(
        decision.reason,
        "asks for 6 prefill and 3 decode workers; within the bounds (1 to 8 workers a pool, 12 \
         GPUs in all at 1 a prefill worker and 4 a decode worker): 4 prefill and 2 decode workers"
    );
    // Within the bounds, the policy's reason stands alone.
    let mut planner = Planner::new(config, Asks(cut), move || kind.build())
        .unwrap_or_else(|e| panic!("valid: {e}"));
    let decision = planner.tick(&interval(5.0, 2, 0, 200.0), cut);
    assert_eq!(decision.reason, "asks for 4 prefill and 2 decode workers");
    let planned = [
        PoolRule::new(WorkerRole::Prefill, Rule::Plan),
        PoolRule::new(WorkerRole::Decode, Rule::Plan),
    ];
    assert_eq!(decision.rules, planned);
}
