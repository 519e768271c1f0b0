//! The planner in the replay: it scales up under a burst and down after it, removed workers
//! drain without losing a request, and worker-hours add up as computed by hand.

use dynamo_mocker::{PlannerReplayConfig, Replay, ReplayConfig, ReplayOutcome, Sla, TraceRequest};
use dynamo_planner::policy::{Forecast, Policy, Proposal};
use dynamo_planner::predict::Constant;
use dynamo_planner::{Bounds, Observation, Planner, PlannerConfig, Replicas};

/// One worker per `per_worker` requests a second, rounded up.
struct PerRate {
    per_worker: f64,
}

impl Policy for PerRate {
    fn name(&self) -> &'static str {
        "per-rate"
    }

    fn plan(&mut self, _: &Observation, forecast: &Forecast, _: Replicas) -> Proposal {
        let workers = (forecast.requests_per_s / self.per_worker).ceil() as usize;
        Proposal::new(
            Replicas::Aggregated(workers),
            format!("{:.1} requests/s", forecast.requests_per_s),
        )
    }
}

/// The targets of a script, one per planning step; the last one stays.
struct Script(Vec<usize>);

impl Policy for Script {
    fn name(&self) -> &'static str {
        "script"
    }

    fn plan(&mut self, _: &Observation, _: &Forecast, _: Replicas) -> Proposal {
        let target = if self.0.len() > 1 {
            self.0.remove(0)
        } else {
            self.0.first().copied().unwrap_or(1)
        };
        Proposal::new(Replicas::Aggregated(target), "scripted")
    }
}

fn planner(policy: impl Policy + 'static, interval_s: f64) -> Planner {
    let config = PlannerConfig {
        interval_s,
        bounds: Bounds::default(),
        advisory: false,
    };
    Planner::new(config, policy, || Box::new(Constant::default())).expect("valid settings")
}

/// `rate` requests a second from `from_s` to `to_s`, ids from `first`.
fn arrivals(from_s: f64, to_s: f64, rate: f64, first: u64, output: u64) -> Vec<TraceRequest> {
    let n = ((to_s - from_s) * rate) as u64;
    (0..n)
        .map(|i| TraceRequest {
            timestamp: (from_s + i as f64 / rate) * 1000.0,
            input_length: 2048,
            output_length: output,
            hash_ids: vec![
                first + 4 * i,
                first + 4 * i + 1,
                first + 4 * i + 2,
                first + 4 * i + 3,
            ],
        })
        .collect()
}

fn replay(
    trace: &[TraceRequest],
    workers: usize,
    planner: Planner,
    startup_ms: f64,
) -> ReplayOutcome {
    let config = ReplayConfig {
        workers,
        ..ReplayConfig::default()
    };
    Replay::new(trace, &config)
        .planner(planner, PlannerReplayConfig { startup_ms })
        .sla(Sla {
            ttft_ms: 500.0,
            itl_ms: 50.0,
        })
        .run()
        .expect("the replay runs")
}

fn last_finish(outcome: &ReplayOutcome) -> f64 {
    outcome
        .records
        .iter()
        .filter_map(|r| r.finish_ms)
        .fold(0.0, f64::max)
}

#[test]
fn the_planner_scales_up_under_a_burst_and_down_after_it() {
    // 2 requests/s for a minute, 20/s for two minutes, 2/s for four.
    let mut trace = arrivals(0.0, 60.0, 2.0, 0, 32);
    trace.extend(arrivals(60.0, 180.0, 20.0, 1_000_000, 32));
    trace.extend(arrivals(180.0, 420.0, 2.0, 2_000_000, 32));
    let outcome = replay(
        &trace,
        1,
        planner(PerRate { per_worker: 4.0 }, 30.0),
        10_000.0,
    );
    let timeline = outcome.summary.replicas.clone().expect("a timeline");
    let during = |from_ms: f64, to_ms: f64| {
        timeline
            .iter()
            .filter(|p| p.at_ms >= from_ms && p.at_ms < to_ms)
            .map(|p| p.ready)
            .max()
            .unwrap_or(0)
    };
    assert_eq!(during(0.0, 60_000.0), 1, "{timeline:?}");
    assert_eq!(during(100_000.0, 190_000.0), 5, "{timeline:?}");
    let last = timeline.last().expect("points");
    assert_eq!((last.ready, last.desired), (1, 1), "{timeline:?}");
    // Each planning step carries the policy's reason; the start and each join carry none.
    assert_eq!(timeline[0].reason, None);
    let steps: Vec<&str> = timeline
        .iter()
        .filter_map(|p| p.reason.as_deref())
        .collect();
    assert!(steps.len() >= 7, "{timeline:?}");
    assert!(steps.iter().all(|r| r.ends_with("requests/s")), "{steps:?}");
    // Nothing lost on the way down.
    assert_eq!(outcome.summary.completed_requests, trace.len());
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    assert!(hours > last_finish(&outcome) / 3_600_000.0, "{hours}");
    assert!(hours < 5.0 * last_finish(&outcome) / 3_600_000.0, "{hours}");
}

#[test]
fn removed_workers_drain_their_requests_and_count_until_drained() {
    // Twelve long requests in the first two seconds over three workers; five seconds in, the
    // planner wants one worker: two leave, busy, and finish what they have.
    let trace = arrivals(0.0, 2.0, 6.0, 0, 1500);
    let outcome = replay(&trace, 3, planner(Script(vec![1]), 5.0), 1_000.0);
    assert_eq!(outcome.summary.completed_requests, trace.len());
    let timeline = outcome.summary.replicas.clone().expect("a timeline");
    assert_eq!((timeline[1].at_ms, timeline[1].ready), (5_000.0, 1));
    // Each worker's last finish; the one that stayed counts to the end.
    let mut last = [0.0f64; 3];
    for record in &outcome.records {
        let finish = record.finish_ms.expect("finished");
        last[record.worker as usize] = last[record.worker as usize].max(finish);
    }
    let end = last_finish(&outcome);
    // The workers removed were serving after they were removed.
    assert!(last.iter().all(|&l| l > 5_000.0), "{last:?}");
    // The worker that stayed counts to the end, the two others until their last finish.
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    let matches = (0..3).any(|stayed| {
        let expected_s = (end
            + (0..3)
                .filter(|&w| w != stayed)
                .map(|w| last[w])
                .sum::<f64>())
            / 1000.0;
        (hours * 3600.0 - expected_s).abs() < 1e-6
    });
    assert!(matches, "{hours} h, last finishes {last:?}, end {end}");
}

#[test]
fn worker_hours_count_starting_workers_from_when_they_were_asked_for() {
    // A request at 0 and one at 59 s. 10 s in, 3 workers are asked for (2 start, ready at
    // 15 s); 20 s in, one is wanted again: the two new ones, idle, leave at once.
    let mut trace = arrivals(0.0, 0.5, 2.0, 0, 4);
    trace.extend(arrivals(59.0, 59.5, 2.0, 100, 4));
    let outcome = replay(&trace, 1, planner(Script(vec![3, 1]), 10.0), 5_000.0);
    let timeline = outcome.summary.replicas.clone().expect("a timeline");
    let points: Vec<(f64, usize, usize)> = timeline
        .iter()
        .take(4)
        .map(|p| (p.at_ms, p.ready, p.desired))
        .collect();
    assert_eq!(
        points,
        [
            (0.0, 1, 1),
            (10_000.0, 1, 3),
            (15_000.0, 2, 3),
            (15_000.0, 3, 3)
        ]
    );
    assert_eq!((timeline[4].at_ms, timeline[4].ready), (20_000.0, 1));
    assert_eq!(outcome.summary.completed_requests, 2);
    let expected_s = last_finish(&outcome) / 1000.0 + 2.0 * (20.0 - 10.0);
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    assert!(
        (hours * 3600.0 - expected_s).abs() < 1e-6,
        "{hours} h, {expected_s} s"
    );
    // Both requests were well within the SLA.
    assert_eq!(outcome.summary.sla_attainment, Some(1.0));
}

#[test]
fn a_worker_cancelled_while_starting_costs_until_cancelled_and_never_serves() {
    // Start-up takes 30 s: the workers asked for at 10 s are cancelled at 20 s.
    let trace = arrivals(0.0, 60.0, 1.0, 0, 4);
    let outcome = replay(&trace, 1, planner(Script(vec![3, 1]), 10.0), 30_000.0);
    assert!(outcome.records.iter().all(|r| r.worker == 0));
    let timeline = outcome.summary.replicas.clone().expect("a timeline");
    assert!(timeline.iter().all(|p| p.ready == 1), "{timeline:?}");
    let expected_s = last_finish(&outcome) / 1000.0 + 2.0 * 10.0;
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    assert!(
        (hours * 3600.0 - expected_s).abs() < 1e-6,
        "{hours} h, {expected_s} s"
    );
}

#[test]
fn a_fixed_replay_reports_worker_hours_and_no_timeline() {
    let trace = arrivals(0.0, 10.0, 2.0, 0, 4);
    let config = ReplayConfig {
        workers: 4,
        ..ReplayConfig::default()
    };
    let outcome = Replay::new(&trace, &config).run().expect("runs");
    assert_eq!(outcome.summary.replicas, None);
    assert_eq!(outcome.summary.sla_attainment, None);
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    assert!((hours * 3600.0 - 4.0 * last_finish(&outcome) / 1000.0).abs() < 1e-6);
}

/// Prefill and decode targets, the same at every step.
struct Pools {
    prefill: usize,
    decode: usize,
}

impl Policy for Pools {
    fn name(&self) -> &'static str {
        "pools"
    }

    fn plan(&mut self, _: &Observation, _: &Forecast, _: Replicas) -> Proposal {
        let target = Replicas::Disaggregated {
            prefill: self.prefill,
            decode: self.decode,
        };
        Proposal::new(target, "fixed targets")
    }
}

#[test]
fn a_disaggregated_replay_scales_each_pool_and_loses_nothing() {
    use dynamo_mocker::{DisaggConfig, HandedOverKv, TransferConfig};

    // 4 requests a second for a minute; 1 prefill and 2 decode workers, then 2 and 1.
    let trace = arrivals(0.0, 60.0, 4.0, 0, 64);
    let config = ReplayConfig {
        disagg: Some(DisaggConfig {
            prefill_workers: 1,
            decode_workers: 2,
            transfer: TransferConfig::default(),
            handed_over_kv: HandedOverKv::Discarded,
        }),
        ..ReplayConfig::default()
    };
    let policy = Pools {
        prefill: 2,
        decode: 1,
    };
    let outcome = Replay::new(&trace, &config)
        .planner(
            planner(policy, 10.0),
            PlannerReplayConfig {
                startup_ms: 5_000.0,
            },
        )
        .run()
        .expect("the replay runs");
    assert_eq!(outcome.summary.completed_requests, trace.len());
    let timeline = outcome.summary.replicas.clone().expect("a timeline");
    let at = |i: usize| {
        let p = &timeline[i];
        (
            p.at_ms,
            p.prefill_ready,
            p.prefill_desired,
            p.ready,
            p.desired,
        )
    };
    assert_eq!(at(0), (0.0, Some(1), Some(1), 2, 2));
    // 10 s in, a decode worker leaves at once and a prefill worker is asked for.
    assert_eq!(at(1), (10_000.0, Some(1), Some(2), 1, 1));
    assert_eq!(at(2), (15_000.0, Some(2), Some(2), 1, 1));
    // The new prefill worker (id 3) computes prompts once it has joined, and only then.
    let on_new: Vec<f64> = outcome
        .records
        .iter()
        .filter(|r| r.prefill_worker == Some(3))
        .map(|r| r.arrival_ms)
        .collect();
    assert!(!on_new.is_empty());
    assert!(on_new.iter().all(|&t| t >= 15_000.0), "{on_new:?}");
    // No request reaches the removed decode worker after it left.
    let removed: Vec<u64> = (1..=2)
        .filter(|&w| {
            outcome
                .records
                .iter()
                .filter(|r| r.worker == w)
                .all(|r| r.arrival_ms < 10_000.0)
        })
        .collect();
    assert_eq!(removed.len(), 1, "one of the decode workers left");
    // Worker-time: the stayers to the end, the new prefill worker from 10 s, the removed
    // decode worker until its last request finished.
    let end = last_finish(&outcome);
    let drained = outcome
        .records
        .iter()
        .filter(|r| r.worker == removed[0])
        .filter_map(|r| r.finish_ms)
        .fold(10_000.0, f64::max);
    let expected_s = (2.0 * end + (end - 10_000.0) + drained) / 1000.0;
    let hours = outcome.summary.worker_hours.expect("worker-hours");
    assert!(
        (hours * 3600.0 - expected_s).abs() < 1e-6,
        "{hours} h, {expected_s} s"
    );
}
