//! The workers' load reports on the gateway's `/metrics`, by `worker`, while the frontend
//! routes to them.

use std::collections::HashSet;
use std::time::Duration;

use dynamo_core::WorkerId;
use dynamo_openai::WorkerGauges;
use dynamo_router::RouterService;
use dynamo_transport::events::{LoadReport, Subscription};
use futures::StreamExt;

/// The gauges a load report sets, by `worker`: kept in [`WorkerGauges`], not through the
/// `metrics` facade, so that they can leave `/metrics`.
const GAUGES: [&str; 4] = [
    "dynamo_worker_active_requests",
    "dynamo_worker_waiting_requests",
    "dynamo_worker_kv_blocks_in_use",
    "dynamo_worker_kv_blocks_total",
];

/// The capacity the router charges a worker's requests against, by `worker`.
const CAPACITY: &str = "dynamo_router_worker_kv_capacity_blocks";

/// How often the frontend looks for workers that left routing, to remove their series.
const DEPARTURES_EVERY: Duration = Duration::from_secs(1);

/// Keep the reported load of the workers `routers` route to in the gateway's Prometheus
/// metrics, and their KV capacity in the routers' load (which the expected-TTFT policy charges
/// a request's blocks against), until `reports` ends.
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
    let mut every = tokio::time::interval(DEPARTURES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            report = reports.next() => match report {
                None => return,
                Some(Ok(report)) => record(&report, &routers, &mut shown),
                Some(Err(_)) => {}
            },
            _ = every.tick() => remove_departed(&routers, &mut shown),
        }
    }
}

/// Whether some router routes to `worker`.
fn routed(routers: &[RouterService], worker: WorkerId) -> bool {
    routers
        .iter()
        .any(|router| router.selector().workers().contains(&worker))
}

/// Set `report`'s worker's capacity in the routers and its series, if a router routes to it.
fn record(report: &LoadReport, routers: &[RouterService], shown: &mut HashSet<WorkerId>) {
    if !routed(routers, report.worker) {
        return;
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
    let values = [
        report.active_requests,
        report.waiting_requests,
        report.kv_blocks_in_use,
        report.kv_blocks_total,
    ];
    for (name, value) in GAUGES.into_iter().zip(values) {
        gauges.set(name, &worker, value as f64);
    }
    shown.insert(report.worker);
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
