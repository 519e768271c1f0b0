//! [`ReportedLoad`]: what a worker's engine says it runs and queues, for engines that other
//! clients share.

use std::time::{Duration, Instant};

use dynamo_core::WorkerId;

use crate::RouterService;
use crate::load::WorkerLoad;
use crate::policy::RouteContext;

/// A worker's load as its engine last reported it (an inference server's `/metrics`, read by
/// the caller), trusted until `until`.
///
/// The router books only the requests it sends; an engine that other clients use runs more.
/// Given to [`RouterService::report_load`], a fresh report counts in three places:
///
/// - **Busy thresholds and the policy**: the worker's booked load is raised to
///   [`floor`](Self::floor) before the [`BusyThresholds`](crate::BusyThresholds) filter and
///   the policy see it, so a server whose queue is over a threshold takes no new request.
/// - **Idle canaries**: a canary that misses its deadline while the report counts more
///   requests than the canary itself is not held against the worker (see
///   [`health`](crate::health)).
///
/// After `until` the report is ignored, as if there were none.
///
/// ```
/// use std::time::{Duration, Instant};
/// use dynamo_core::BlockSize;
/// use dynamo_router::RouteContext;
/// use dynamo_router::health::ReportedLoad;
///
/// let read_at = Instant::now();
/// let report = ReportedLoad::new(3, 2, read_at, Duration::from_secs(5));
/// assert!(report.is_fresh(read_at + Duration::from_secs(5)));
/// assert!(!report.is_fresh(read_at + Duration::from_secs(6)));
/// // Each reported request counts as one like the request being routed.
/// let blocks = [dynamo_core::SequenceHash(1), dynamo_core::SequenceHash(2)];
/// let request = RouteContext {
///     blocks: &blocks,
///     prompt_tokens: 40,
///     block_size: BlockSize::new(16)?,
///     expected_output_tokens: None,
/// };
/// let floor = report.floor(&request);
/// assert_eq!(floor.active_requests, 5);
/// assert_eq!(floor.active_prefill_tokens, 2 * 40);
/// assert_eq!(floor.active_decode_blocks, 5 * 3);
/// // An engine that tells the KV blocks its running requests hold: those, and the waiting
/// // requests' estimate.
/// let floor = report.with_kv_blocks_in_use(100).floor(&request);
/// assert_eq!(floor.active_decode_blocks, 100 + 2 * 3);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedLoad {
    /// Requests the engine runs.
    pub running: u32,
    /// Requests it queues.
    pub waiting: u32,
    /// KV blocks (of the router's block size) its running requests hold, when it says.
    pub kv_blocks_in_use: Option<u64>,
    /// When the engine was read.
    pub read_at: Instant,
    /// The last instant the report is trusted.
    pub until: Instant,
}

impl ReportedLoad {
    /// `running` and `waiting` read at `read_at`, trusted for `fresh_for` after.
    pub fn new(running: u32, waiting: u32, read_at: Instant, fresh_for: Duration) -> Self {
        ReportedLoad {
            running,
            waiting,
            kv_blocks_in_use: None,
            read_at,
            until: read_at + fresh_for,
        }
    }

    /// The same report with the KV blocks, of the router's block size, that the engine's
    /// running requests hold: they stand in [`floor`](Self::floor) for the running requests'
    /// estimated decode blocks.
    pub fn with_kv_blocks_in_use(self, blocks: u64) -> Self {
        ReportedLoad {
            kv_blocks_in_use: Some(blocks),
            ..self
        }
    }

    /// The requests the engine runs or queues.
    pub fn requests(&self) -> u32 {
        self.running.saturating_add(self.waiting)
    }

    /// Whether the report is still trusted at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now <= self.until
    }

    /// The load the report stands for when `request` is routed. The engine reports requests,
    /// not their sizes, so each counts as one like `request`: every one as its prompt's blocks
    /// plus one (decode blocks), each waiting one as its prompt still to compute. Where the
    /// engine told the blocks its running requests hold
    /// ([`kv_blocks_in_use`](Self::kv_blocks_in_use)), those count for the running ones.
    pub fn floor(&self, request: &RouteContext<'_>) -> WorkerLoad {
        let requests = self.requests();
        let blocks_each = request.blocks.len() as u64 + 1;
        let running_blocks = self
            .kv_blocks_in_use
            .unwrap_or(u64::from(self.running) * blocks_each);
        WorkerLoad {
            active_requests: requests,
            active_prefill_tokens: u64::from(self.waiting) * request.prompt_tokens,
            active_decode_blocks: running_blocks
                .saturating_add(u64::from(self.waiting) * blocks_each),
            expected_output_tokens: 0,
            kv_capacity_blocks: None,
        }
    }

    /// Raise `load` to [`floor`](Self::floor), dimension by dimension, never lowering it: the
    /// router's own bookings are part of what the engine runs, seen sooner.
    pub(crate) fn raise(&self, load: &mut WorkerLoad, request: &RouteContext<'_>) {
        let floor = self.floor(request);
        load.active_requests = load.active_requests.max(floor.active_requests);
        load.active_prefill_tokens = load.active_prefill_tokens.max(floor.active_prefill_tokens);
        load.active_decode_blocks = load.active_decode_blocks.max(floor.active_decode_blocks);
    }

    /// Whether the engine, read at this report, was busy with work other than a canary sent
    /// at `canary_sent`: a report read after the canary may count it, one read before cannot.
    pub(crate) fn is_busy_beside_canary(&self, canary_sent: Instant) -> bool {
        let canary = u32::from(self.read_at >= canary_sent);
        self.requests() > canary
    }
}

impl RouterService {
    /// Tell the router what `worker`'s engine last reported it runs and queues (`None`: no
    /// fresh report, forget the last one). For engines that other clients share, whose load
    /// the router's own bookings miss; see [`ReportedLoad`] for where a report counts.
    ///
    /// A report is kept until replaced or forgotten, for a worker that is not routed to as
    /// well (it counts once the worker joins). Each call wakes the next waiting request, which
    /// looks again: report `None` when a report lapses, so that requests waiting on a worker
    /// busy by its report alone are woken (a report passing its `until` wakes nobody).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use dynamo_core::{BlockSize, EchoEngine, WorkerId};
    /// use dynamo_router::{BusyThresholds, RouterService};
    /// use dynamo_router::health::ReportedLoad;
    ///
    /// let router = RouterService::builder(BlockSize::new(4)?)
    ///     .thresholds(BusyThresholds { max_active_requests: Some(8), ..Default::default() })
    ///     .build();
    /// router.insert_worker(WorkerId::new(1), EchoEngine::new());
    /// // Its server queues 10 requests of other clients: over the threshold.
    /// let report = ReportedLoad::new(4, 6, Instant::now(), Duration::from_secs(5));
    /// router.report_load(WorkerId::new(1), Some(report));
    /// assert!(!router.selector().has_free_worker());
    /// router.report_load(WorkerId::new(1), None);
    /// assert!(router.selector().has_free_worker());
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    pub fn report_load(&self, worker: WorkerId, report: Option<ReportedLoad>) {
        self.selector().report_load(worker, report);
        self.wake_waiting();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dynamo_core::{BlockSize, SequenceHash};

    use super::*;
    use crate::{
        BusyThresholds, Decision, NotRouted, RoundRobin, RouteRequest, Router, SelectorConfig,
        SharedIndex, WorkerSelector, WorkerState,
    };

    const FRESH: Duration = Duration::from_secs(5);

    fn block_size() -> BlockSize {
        BlockSize::new(16).expect("a block size")
    }

    fn selector(thresholds: BusyThresholds, policy: impl crate::Router) -> WorkerSelector {
        let config = SelectorConfig {
            thresholds,
            ..SelectorConfig::new(block_size())
        };
        let selector = WorkerSelector::new(config, policy, SharedIndex::new(block_size()));
        selector.insert_worker(WorkerId::new(1));
        selector.insert_worker(WorkerId::new(2));
        selector
    }

    fn request() -> RouteRequest {
        RouteRequest {
            blocks: vec![SequenceHash(1), SequenceHash(2)],
            prompt_tokens: 40,
            expected_output_tokens: None,
            sequences: 1,
            session_id: None,
            priority: 0,
        }
    }

    /// Where each of `n` requests goes, each released before the next, at `now`.
    fn route(selector: &WorkerSelector, n: usize, now: Instant) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let routed = selector.select(&request(), now).expect("routed");
                routed.worker.worker
            })
            .collect()
    }

    #[test]
    fn a_worker_busy_by_its_report_alone_is_left_out_until_the_report_goes_stale() {
        let limits = BusyThresholds {
            max_active_requests: Some(4),
            ..BusyThresholds::default()
        };
        let selector = selector(limits, RoundRobin::new());
        let now = Instant::now();
        // Nothing booked on either: round robin uses both.
        assert_eq!(route(&selector, 4, now), [1, 2, 1, 2]);
        // Worker 1's server runs 2 and queues 2 requests of other clients: at the limit.
        let report = ReportedLoad::new(2, 2, now, FRESH);
        selector.report_load(WorkerId::new(1), Some(report));
        assert!(selector.has_free_worker());
        assert_eq!(route(&selector, 4, now), [2, 2, 2, 2]);
        // Under the limit it is routed to again.
        selector.report_load(WorkerId::new(1), Some(ReportedLoad::new(1, 2, now, FRESH)));
        assert!(route(&selector, 4, now).contains(&1));
        // Over it again, then the report goes stale: ignored, as if there were none.
        selector.report_load(WorkerId::new(1), Some(ReportedLoad::new(9, 9, now, FRESH)));
        assert_eq!(route(&selector, 2, now + FRESH), [2, 2]);
        assert!(route(&selector, 4, now + FRESH + Duration::from_millis(1)).contains(&1));
    }

    #[test]
    fn every_worker_busy_by_reports_makes_the_request_wait() {
        let limits = BusyThresholds {
            max_active_requests: Some(4),
            ..BusyThresholds::default()
        };
        let selector = selector(limits, RoundRobin::new());
        let now = Instant::now();
        for worker in [1, 2] {
            let report = ReportedLoad::new(0, 4, now, FRESH);
            selector.report_load(WorkerId::new(worker), Some(report));
        }
        assert!(!selector.has_free_worker());
        let refused = selector.select(&request(), now).expect_err("all busy");
        assert!(matches!(refused, NotRouted::AllBusy { .. }), "{refused:?}");
        // A forgotten report frees its worker.
        selector.report_load(WorkerId::new(2), None);
        assert!(selector.has_free_worker());
        assert_eq!(route(&selector, 2, now), [2, 2]);
    }

    #[test]
    fn a_report_waits_for_its_worker_and_survives_a_withdrawal() {
        let limits = BusyThresholds {
            max_active_requests: Some(1),
            ..BusyThresholds::default()
        };
        let selector = selector(limits, RoundRobin::new());
        let now = Instant::now();
        // Reported before it joins, it counts once worker 3 does.
        selector.report_load(WorkerId::new(3), Some(ReportedLoad::new(1, 0, now, FRESH)));
        selector.insert_worker(WorkerId::new(3));
        selector.withdraw_worker(WorkerId::new(2));
        selector.insert_worker(WorkerId::new(2));
        assert!(!route(&selector, 6, now).contains(&3));
        selector.withdraw_worker(WorkerId::new(3));
        selector.insert_worker(WorkerId::new(3));
        assert!(!route(&selector, 6, now).contains(&3));
    }

    /// A policy that keeps the loads it was shown and routes to the first worker.
    #[derive(Debug, Default)]
    struct Shown(parking_lot::Mutex<Vec<WorkerState>>);

    impl Router for Shown {
        fn route(&self, _: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
            *self.0.lock() = workers.to_vec();
            Decision::Route(workers[0].worker)
        }
    }

    #[test]
    fn the_policy_sees_booked_load_raised_to_the_fresh_report_never_lowered() {
        let shown = Arc::new(Shown::default());
        let selector = selector(BusyThresholds::default(), Arc::clone(&shown));
        let loads = || -> Vec<WorkerLoad> { shown.0.lock().iter().map(|w| w.load).collect() };
        let now = Instant::now();
        let report = ReportedLoad::new(8, 8, now, FRESH);
        selector.report_load(WorkerId::new(2), Some(report));
        let held = selector.select(&request(), now).expect("routed");
        assert_eq!(held.worker, WorkerId::new(1));
        // Each of the 16 reported requests counts as one like this one (40 tokens, 2 blocks).
        let raised = WorkerLoad {
            active_requests: 16,
            active_prefill_tokens: 8 * 40,
            active_decode_blocks: 16 * 3,
            ..WorkerLoad::default()
        };
        assert_eq!(loads(), [WorkerLoad::default(), raised]);
        // An engine that tells its running requests' blocks: those, and the 8 waiting ones'.
        let told = report.with_kv_blocks_in_use(500);
        selector.report_load(WorkerId::new(2), Some(told));
        drop(selector.select(&request(), now).expect("routed"));
        let raised_by_blocks = WorkerLoad {
            active_decode_blocks: 500 + 8 * 3,
            ..raised
        };
        assert_eq!(loads()[1], raised_by_blocks);
        selector.report_load(WorkerId::new(2), Some(report));
        // Worker 1's booking is above its own small report: kept.
        selector.report_load(WorkerId::new(1), Some(ReportedLoad::new(0, 0, now, FRESH)));
        let booked = selector.load().load(WorkerId::new(1));
        assert_eq!(booked.active_requests, 1);
        let _second = selector.select(&request(), now).expect("routed");
        assert_eq!(loads(), [booked, raised]);
        // Stale, both reports are ignored.
        let _third = selector
            .select(&request(), now + FRESH + Duration::from_millis(1))
            .expect("routed");
        assert_eq!(loads()[1], WorkerLoad::default());
        drop(held);
    }

    #[test]
    fn a_canary_counts_in_a_report_read_after_it_was_sent() {
        let sent = Instant::now();
        let before = sent - Duration::from_millis(500);
        let after = sent + Duration::from_millis(500);
        // Read before the canary, any request is another client's.
        assert!(ReportedLoad::new(1, 0, before, FRESH).is_busy_beside_canary(sent));
        assert!(!ReportedLoad::new(0, 0, before, FRESH).is_busy_beside_canary(sent));
        // Read after, one request may be the canary itself.
        assert!(!ReportedLoad::new(0, 1, after, FRESH).is_busy_beside_canary(sent));
        assert!(ReportedLoad::new(1, 1, after, FRESH).is_busy_beside_canary(sent));
    }
}
