//! Where the load engine servers report (polled from their metrics) goes: to the routers,
//! through [`RouterService::report_load`].
//!
//! The router books the requests it sends, which is the whole load of an engine only when this
//! frontend is its only client. An engine server that other clients also use reports its own
//! queue; the router raises the server's booked load to that report before its busy
//! thresholds and its policy see it, and does not eject a server whose canary is late while
//! the report says it runs or queues other work (see `dynamo_router::health::ReportedLoad`).
//! A report is trusted until its staleness limit, then ignored: a server whose metrics stop
//! answering is routed on booked load alone.

use std::sync::{Arc, RwLock};

use dynamo_core::WorkerId;
use dynamo_router::RouterService;
use dynamo_router::health::ReportedLoad;

/// The routers the engine servers' reported loads go to; cheap to clone. Every router the
/// frontend builds for `--engine-at` is told; one that does not route to a server keeps its
/// report unused.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportedLoads {
    routers: Arc<RwLock<Vec<RouterService>>>,
}

impl ReportedLoads {
    /// Send every later report to `router` too.
    pub(crate) fn tell(&self, router: RouterService) {
        self.routers
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(router);
    }

    /// Give every router `worker`'s latest report, or have them forget it (`None`: the
    /// reading went stale).
    pub(crate) fn set(&self, worker: WorkerId, report: Option<ReportedLoad>) {
        let routers = self
            .routers
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        for router in routers.iter() {
            router.report_load(worker, report);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dynamo_core::{BlockSize, EchoEngine};
    use dynamo_router::BusyThresholds;

    use super::*;

    #[test]
    fn a_report_reaches_every_router_told_and_none_forgets_it() {
        let loads = ReportedLoads::default();
        let routers: Vec<RouterService> = (0..2)
            .map(|_| {
                let router = RouterService::builder(BlockSize::new(16).expect("a block size"))
                    .thresholds(BusyThresholds {
                        max_active_requests: Some(4),
                        ..BusyThresholds::default()
                    })
                    .build();
                router.insert_worker(WorkerId::new(1), EchoEngine::new());
                loads.tell(router.clone());
                router
            })
            .collect();
        let report = ReportedLoad::new(2, 2, Instant::now(), Duration::from_secs(5));
        loads.set(WorkerId::new(1), Some(report));
        assert!(routers.iter().all(|r| !r.selector().has_free_worker()));
        loads.set(WorkerId::new(1), None);
        assert!(routers.iter().all(|r| r.selector().has_free_worker()));
    }
}
