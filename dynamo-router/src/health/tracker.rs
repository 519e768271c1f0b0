//! [`HealthTracker`]: the failures in a row of each worker, and which ones are ejected.

use std::collections::HashMap;

use dynamo_core::WorkerId;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::HealthConfig;
use crate::selector::WorkerSelector;

/// Why a worker was ejected: the `reason` label of `dynamo_router_ejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// An attempt produced no chunk within the stall timeout.
    Stalled,
    /// An attempt failed with `unavailable`, or ended without a last chunk.
    Failed,
    /// A canary to an idle worker got no answer in time.
    Canary,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Stalled => "stalled",
            Failure::Failed => "failed",
            Failure::Canary => "canary",
        }
    }
}

#[derive(Debug)]
struct WorkerHealth {
    failures: u32,
    ejected: bool,
    /// When the worker last got a request or a canary.
    last_active: Instant,
}

/// The health of each routed worker, shared by the router and the attempts it watches.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    config: HealthConfig,
    selector: WorkerSelector,
    workers: Mutex<HashMap<WorkerId, WorkerHealth>>,
}

impl HealthTracker {
    pub(crate) fn new(config: HealthConfig, selector: WorkerSelector) -> Self {
        HealthTracker {
            config,
            selector,
            workers: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// A worker joined (or joined again): healthy, with no failures.
    pub(crate) fn insert(&self, worker: WorkerId) {
        self.workers.lock().insert(
            worker,
            WorkerHealth {
                failures: 0,
                ejected: false,
                last_active: Instant::now(),
            },
        );
    }

    /// A worker left.
    pub(crate) fn remove(&self, worker: WorkerId) {
        self.workers.lock().remove(&worker);
    }

    /// A request (or canary) was sent to `worker`.
    pub(crate) fn dispatched(&self, worker: WorkerId) {
        if let Some(health) = self.workers.lock().get_mut(&worker) {
            health.last_active = Instant::now();
        }
    }

    /// An attempt on `worker` produced a chunk: its failures in a row end.
    pub(crate) fn succeeded(&self, worker: WorkerId) {
        if let Some(health) = self.workers.lock().get_mut(&worker) {
            health.failures = 0;
        }
    }

    /// An attempt on `worker` failed; ejects it when that makes too many in a row (a stall
    /// or a failed canary at once). Returns whether it was ejected now.
    pub(crate) fn failed(&self, worker: WorkerId, failure: Failure, cause: &str) -> bool {
        let mut workers = self.workers.lock();
        let ejected = workers.values().filter(|health| health.ejected).count();
        let total = workers.len();
        let Some(health) = workers.get_mut(&worker) else {
            return false;
        };
        health.failures = health.failures.saturating_add(1);
        let limit = match failure {
            Failure::Stalled | Failure::Canary => 1,
            Failure::Failed => self.config.eject_after,
        };
        if health.ejected || self.config.eject_after == 0 || health.failures < limit {
            return false;
        }
        let failures = health.failures;
        if !self.config.may_eject(ejected, total) {
            drop(workers);
            tracing::warn!(
                "worker {worker} would be ejected: {cause} ({failures} in a row), but {ejected} \
                 of {total} workers are ejected already (at most {}%): it stays routed",
                self.config.max_ejected_percent
            );
            metrics::counter!("dynamo_router_ejections_capped_total", "reason" => failure.name())
                .increment(1);
            return false;
        }
        health.ejected = true;
        // Withdrawn under the lock, so a canary's return cannot come between.
        self.selector.withdraw_worker(worker);
        drop(workers);
        tracing::warn!(
            "worker {worker} ejected: {cause} ({failures} in a row); it returns when it answers \
             a canary"
        );
        metrics::counter!("dynamo_router_ejections_total", "reason" => failure.name()).increment(1);
        true
    }

    /// The call that starts an attempt on `worker` took longer than the stall timeout.
    pub(crate) fn stalled(&self, worker: WorkerId, stalled: &super::Stalled) {
        self.failed(worker, Failure::Stalled, &stalled.to_string());
    }

    /// The call that starts an attempt on `worker` failed with `error`.
    pub(crate) fn refused(&self, worker: WorkerId, error: &dynamo_core::Error) {
        if error.class() == dynamo_core::ErrorClass::Unavailable {
            self.failed(worker, Failure::Failed, &error.to_string());
        }
    }

    /// Whether `worker` is ejected now.
    pub(crate) fn is_ejected(&self, worker: WorkerId) -> bool {
        self.workers.lock().get(&worker).is_some_and(|h| h.ejected)
    }

    /// The workers due a canary at `now`: every ejected one, and, when idle workers are
    /// probed, the routed ones with no active request and none sent for the probe interval. Each is marked active, so it is not due
    /// again before the next interval.
    pub(crate) fn due(&self, now: Instant) -> Vec<(WorkerId, bool)> {
        let mut workers = self.workers.lock();
        let mut due = Vec::new();
        for (&worker, health) in workers.iter_mut() {
            // A worker still streaming is not idle, however long ago its request came: a
            // canary would queue behind its work and could miss its deadline.
            let idle = now.saturating_duration_since(health.last_active)
                >= self.config.probe_interval
                && self.selector.load().load(worker).active_requests == 0;
            if health.ejected || (self.config.probe_idle && idle) {
                due.push((worker, health.ejected));
                health.last_active = now;
            }
        }
        due.sort_unstable();
        due
    }

    /// An ejected `worker` answered a canary: it returns to routing.
    pub(crate) fn returned(&self, worker: WorkerId) {
        let mut workers = self.workers.lock();
        let Some(health) = workers.get_mut(&worker) else {
            return;
        };
        health.failures = 0;
        if health.ejected {
            health.ejected = false;
            self.selector.insert_worker(worker);
            drop(workers);
            tracing::info!("worker {worker} answered a canary and returns to routing");
        }
    }
}
