//! The load engine servers report (polled from their metrics) in the router's choice.
//!
//! The router books the requests it sends, which is the whole load of an engine only when this
//! frontend is its only client. An engine server that other clients also use reports its own
//! queue; [`WithReportedLoad`] raises each worker's booked load to what its server reported,
//! before the routing policy sees it. A report is trusted until its staleness limit, then
//! ignored: a server whose metrics stop answering is routed on booked load alone.
//!
//! The server reports requests, not their sizes, so each reported request counts as one like
//! the request being routed: a waiting one as its prompt still to compute, every one as its
//! prompt's blocks plus one. The router's load is raised to that floor dimension by dimension,
//! never lowered (its own bookings are a subset of what the server runs, seen sooner).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use dynamo_core::WorkerId;
use dynamo_router::{Decision, RouteContext, Router, WorkerLoad, WorkerState};

/// One server's last reported queue, trusted until `until`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reported {
    pub(crate) running: u32,
    pub(crate) waiting: u32,
    pub(crate) until: Instant,
}

/// The reported loads of the engine servers, by worker; cheap to clone. One entry per
/// `--engine-at` server, so the map is bounded by the command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportedLoads {
    loads: Arc<RwLock<HashMap<WorkerId, Reported>>>,
}

impl ReportedLoads {
    /// Record `worker`'s latest report, or forget it (`None`: the reading went stale).
    pub(crate) fn set(&self, worker: WorkerId, reported: Option<Reported>) {
        let mut loads = self
            .loads
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        match reported {
            Some(reported) => loads.insert(worker, reported),
            None => loads.remove(&worker),
        };
    }

    /// `workers` with each load raised to its server's fresh report; `None` when no worker
    /// has one (the policy then sees the router's own snapshot).
    fn raise(
        &self,
        request: &RouteContext<'_>,
        workers: &[WorkerState],
        now: Instant,
    ) -> Option<Vec<WorkerState>> {
        let loads = self
            .loads
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        if loads.is_empty() {
            return None;
        }
        let mut raised = None;
        for (at, state) in workers.iter().enumerate() {
            let Some(reported) = loads.get(&state.worker).filter(|r| r.until >= now) else {
                continue;
            };
            let floor = floor(reported, request);
            let states = raised.get_or_insert_with(|| workers.to_vec());
            let load: &mut WorkerLoad = &mut states[at].load;
            load.active_requests = load.active_requests.max(floor.active_requests);
            load.active_prefill_tokens =
                load.active_prefill_tokens.max(floor.active_prefill_tokens);
            load.active_decode_blocks = load.active_decode_blocks.max(floor.active_decode_blocks);
        }
        raised
    }
}

/// The load `reported` stands for, each request counted as one like `request`.
fn floor(reported: &Reported, request: &RouteContext<'_>) -> WorkerLoad {
    let requests = reported.running.saturating_add(reported.waiting);
    let blocks_each = request.blocks.len() as u64 + 1;
    WorkerLoad {
        active_requests: requests,
        active_prefill_tokens: u64::from(reported.waiting) * request.prompt_tokens,
        active_decode_blocks: u64::from(requests) * blocks_each,
        expected_output_tokens: 0,
        kv_capacity_blocks: None,
    }
}

/// A routing policy that sees each worker's load raised to what its server reported.
#[derive(Debug)]
pub(crate) struct WithReportedLoad<P> {
    policy: P,
    loads: ReportedLoads,
}

impl<P: Router> WithReportedLoad<P> {
    pub(crate) fn new(policy: P, loads: ReportedLoads) -> Self {
        WithReportedLoad { policy, loads }
    }
}

impl<P: Router> Router for WithReportedLoad<P> {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        match self.loads.raise(request, workers, Instant::now()) {
            Some(raised) => self.policy.route(request, &raised),
            None => self.policy.route(request, workers),
        }
    }

    fn reads_overlaps(&self) -> bool {
        self.policy.reads_overlaps()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dynamo_core::{BlockSize, SequenceHash};
    use dynamo_router::ExpectedTtft;

    use super::*;

    fn state(worker: u64) -> WorkerState {
        WorkerState {
            worker: WorkerId::new(worker),
            cached: Default::default(),
            in_flight: 0,
            load: WorkerLoad::default(),
        }
    }

    #[test]
    fn a_reported_queue_steers_requests_to_the_idle_server_until_it_goes_stale() {
        let loads = ReportedLoads::default();
        let policy = WithReportedLoad::new(ExpectedTtft::default(), loads.clone());
        let blocks = [SequenceHash(1), SequenceHash(2)];
        let request = RouteContext {
            blocks: &blocks,
            prompt_tokens: 40,
            block_size: BlockSize::new(16).expect("a block size"),
            expected_output_tokens: None,
        };
        // Worker 2 holds the prompt's blocks, so on booked load alone it is the choice.
        let mut cached = state(2);
        cached.cached.device = 2;
        let workers = [state(1), cached];
        assert_eq!(
            policy.route(&request, &workers),
            Decision::Route(WorkerId::new(2))
        );
        // Its server reports a long queue: the idle worker 1 wins.
        let now = Instant::now();
        let busy = Reported {
            running: 8,
            waiting: 8,
            until: now + Duration::from_secs(5),
        };
        loads.set(WorkerId::new(2), Some(busy));
        assert_eq!(
            policy.route(&request, &workers),
            Decision::Route(WorkerId::new(1))
        );
        let raised = loads.raise(&request, &workers, now).expect("raised");
        assert_eq!(raised[1].load.active_requests, 16);
        assert_eq!(raised[1].load.active_prefill_tokens, 8 * 40);
        assert_eq!(raised[1].load.active_decode_blocks, 16 * 3);
        assert_eq!(raised[0].load, WorkerLoad::default());
        // A stale report is ignored, a forgotten one too.
        let later = now + Duration::from_secs(6);
        assert!(loads.raise(&request, &workers, later).is_none());
        loads.set(WorkerId::new(2), None);
        assert_eq!(
            policy.route(&request, &workers),
            Decision::Route(WorkerId::new(2))
        );
    }

    #[test]
    fn the_wrapper_reads_overlaps_only_if_its_policy_does() {
        let loads = ReportedLoads::default();
        assert!(WithReportedLoad::new(ExpectedTtft::default(), loads.clone()).reads_overlaps());
        assert!(!WithReportedLoad::new(dynamo_router::RoundRobin::new(), loads).reads_overlaps());
    }

    #[test]
    fn booked_load_above_the_report_is_kept() {
        let loads = ReportedLoads::default();
        let until = Instant::now() + Duration::from_secs(5);
        loads.set(
            WorkerId::new(1),
            Some(Reported {
                running: 1,
                waiting: 0,
                until,
            }),
        );
        let mut booked = state(1);
        booked.load.active_requests = 4;
        booked.load.active_prefill_tokens = 100;
        let request = RouteContext {
            blocks: &[],
            prompt_tokens: 8,
            block_size: BlockSize::new(16).expect("a block size"),
            expected_output_tokens: None,
        };
        let raised = loads
            .raise(&request, &[booked], Instant::now())
            .expect("raised");
        assert_eq!(raised[0].load.active_requests, 4);
        assert_eq!(raised[0].load.active_prefill_tokens, 100);
        assert_eq!(raised[0].load.active_decode_blocks, 1);
    }
}
