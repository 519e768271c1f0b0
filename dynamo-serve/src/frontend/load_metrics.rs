//! The workers' load reports: on the gateway's `/metrics`, by `worker`, and to the routers
//! (`RouterService::report_load`), while the frontend routes to them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dynamo_core::WorkerId;
use dynamo_openai::WorkerGauges;
use dynamo_router::RouterService;
use dynamo_router::health::ReportedLoad;
use dynamo_transport::events::{LoadReport, Subscription};
use futures::StreamExt;

use crate::engines::EngineReading;
use crate::worker::REPORT_FRESH_FOR;

/// The gauge of a load report's open streams, by `worker`, beside its engine's reading
/// ([`EngineReading::show`]): kept in [`WorkerGauges`], not through the `metrics` facade, so
/// that they can leave `/metrics`.
const ACTIVE: &str = "dynamo_worker_active_requests";

/// The capacity the router charges a worker's requests against, by `worker`.
const CAPACITY: &str = "dynamo_router_worker_kv_capacity_blocks";

/// How often the frontend looks for workers that left routing, to remove their series, and
/// for reports that lapsed.
const DEPARTURES_EVERY: Duration = Duration::from_secs(1);

/// Keep the reported load of the workers `routers` route to in the gateway's Prometheus
/// metrics, their KV capacity in the routers' load (which the expected-TTFT policy charges
/// a request's blocks against), and their requests in the routers' view of their load
/// ([`RouterService::report_load`]), until `reports` ends.
///
/// The routers book only this frontend's requests; a worker that other frontends also route
/// to runs theirs too, and its report counts them all. Each report is given to the routers as
/// a [`ReportedLoad`] read when it arrived, trusted for [`REPORT_FRESH_FOR`]: its requests
/// raise the worker's booked load before the busy thresholds and the policy see it (never
/// lowering it: this frontend's own requests are part of the report), its waiting requests
/// count as prompts to prefill, and a canary that is late while it counts other requests does
/// not eject the worker. A worker whose reports stop coming has its report forgotten (`None`)
/// within [`DEPARTURES_EVERY`] of it lapsing, as is one that leaves routing.
///
/// A report's blocks are the worker's, and discovery admits only workers whose block size is
/// the router's (`--block-size`), so they are the router's blocks as they are. A worker that
/// reports 0 (an engine that does not know its cache) has no capacity known; one that leaves
/// routing has its capacity forgotten with it, and its series leave `/metrics` within
/// [`DEPARTURES_EVERY`]. A report of a worker that no router routes to (not yet joined, or
/// gone) sets nothing.
pub(super) async fn record_load(
    mut reports: Subscription<LoadReport>,
    routers: [RouterService; 2],
) {
    let mut shown = HashSet::new();
    let mut reported = HashMap::new();
    let mut every = tokio::time::interval(DEPARTURES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            report = reports.next() => match report {
                None => return,
                Some(Ok(report)) => {
                    if record(&report, &routers, &mut shown) {
                        reported.insert(report.worker, Instant::now() + REPORT_FRESH_FOR);
                    }
                }
                Some(Err(_)) => {}
            },
            _ = every.tick() => {
                remove_departed(&routers, &mut shown);
                forget_lapsed(&routers, &shown, &mut reported);
            }
        }
    }
}

/// Whether some router routes to `worker`.
fn routed(routers: &[RouterService], worker: WorkerId) -> bool {
    routers
        .iter()
        .any(|router| router.selector().workers().contains(&worker))
}

/// Give `report` to the routers and set its worker's capacity in them and its series, if a
/// router routes to it; whether one does.
fn record(report: &LoadReport, routers: &[RouterService], shown: &mut HashSet<WorkerId>) -> bool {
    if !routed(routers, report.worker) {
        return false;
    }
    let reported = Some(reported_load(report, Instant::now()));
    for router in routers {
        router.report_load(report.worker, reported);
    }
    let worker = report.worker.to_string();
    let gauges = WorkerGauges::global();
    let capacity = Some(report.kv_blocks_total);
    let mut known = false;
    for router in routers {
        known |= router
            .selector()
            .load()
            .set_kv_capacity(report.worker, capacity);
    }
    if known {
        // What the router routes with, once it has it (0: none known).
        gauges.set(CAPACITY, &worker, report.kv_blocks_total as f64);
    }
    gauges.set(ACTIVE, &worker, report.active_requests as f64);
    let reading = EngineReading {
        waiting_requests: report.waiting_requests,
        kv_blocks_in_use: report.kv_blocks_in_use,
        kv_blocks_total: report.kv_blocks_total,
        preemptions: report.preemptions,
    };
    reading.show(&worker);
    shown.insert(report.worker);
    true
}

/// `report` as the routers read it, arrived at `now`. A worker's active requests are the
/// streams open on it, queued ones included: the ones it runs are those not waiting. Its KV
/// blocks in use count where its engine keeps a cache (a total above 0; discovery admits only
/// workers of the routers' block size).
fn reported_load(report: &LoadReport, now: Instant) -> ReportedLoad {
    let count = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    let waiting = count(report.waiting_requests);
    let running = count(report.active_requests).saturating_sub(waiting);
    let load = ReportedLoad::new(running, waiting, now, REPORT_FRESH_FOR);
    if report.kv_blocks_total > 0 {
        load.with_kv_blocks_in_use(report.kv_blocks_in_use)
    } else {
        load
    }
}

/// Have the routers forget the reports in `reported` that lapsed, or whose worker left routing
/// (not in `shown` any more).
fn forget_lapsed(
    routers: &[RouterService],
    shown: &HashSet<WorkerId>,
    reported: &mut HashMap<WorkerId, Instant>,
) {
    let now = Instant::now();
    reported.retain(|worker, until| {
        if now <= *until && shown.contains(worker) {
            return true;
        }
        for router in routers {
            router.report_load(*worker, None);
        }
        false
    });
}

/// Remove the series of the workers in `shown` that no router routes to any more, and forget
/// them.
fn remove_departed(routers: &[RouterService], shown: &mut HashSet<WorkerId>) {
    if shown.is_empty() {
        return;
    }
    let routed: HashSet<WorkerId> = routers
        .iter()
        .flat_map(|router| router.selector().workers())
        .collect();
    shown.retain(|worker| {
        if routed.contains(worker) {
            return true;
        }
        WorkerGauges::global().remove(&worker.to_string());
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_queued_requests_are_waiting_and_the_rest_of_its_streams_running() {
        let report = |active_requests, waiting_requests| LoadReport {
            worker: WorkerId::new(1),
            active_requests,
            waiting_requests,
            kv_blocks_in_use: 0,
            kv_blocks_total: 64,
            preemptions: 0,
        };
        let now = Instant::now();
        let load = reported_load(&report(5, 2), now);
        assert_eq!((load.running, load.waiting), (3, 2));
        assert_eq!(load.requests(), 5);
        assert!(load.is_fresh(now + REPORT_FRESH_FOR));
        assert!(!load.is_fresh(now + REPORT_FRESH_FOR + Duration::from_millis(1)));
        // More waiting than open streams (read apart): none running, never fewer than waiting.
        let load = reported_load(&report(1, 2), now);
        assert_eq!((load.running, load.waiting), (0, 2));
        let load = reported_load(&report(u64::MAX, 0), now);
        assert_eq!(load.running, u32::MAX);
    }

    #[test]
    fn a_reports_blocks_in_use_count_where_its_engine_keeps_a_cache() {
        let report = |kv_blocks_in_use, kv_blocks_total| LoadReport {
            worker: WorkerId::new(1),
            active_requests: 3,
            waiting_requests: 0,
            kv_blocks_in_use,
            kv_blocks_total,
            preemptions: 0,
        };
        let now = Instant::now();
        assert_eq!(
            reported_load(&report(40, 64), now).kv_blocks_in_use,
            Some(40)
        );
        assert_eq!(reported_load(&report(0, 64), now).kv_blocks_in_use, Some(0));
        // An engine without a KV cache (echo) reports 0 of 0: no count.
        assert_eq!(reported_load(&report(0, 0), now).kv_blocks_in_use, None);
    }
}
