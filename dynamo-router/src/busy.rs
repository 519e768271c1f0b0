//! Busy thresholds: a worker over any limit takes no new request until its load falls.

use crate::load::WorkerLoad;

/// Limits on a worker's booked load; a worker at or over any of them is busy.
///
/// The load compared is the one the policy sees: what the router booked, raised to what the
/// worker's engine last reported when the caller tells it
/// ([`RouterService::report_load`](crate::RouterService::report_load), for engines that other
/// clients share), so a server whose own queue is over a limit is busy too.
///
/// Busy workers are left out of routing. When every worker is busy the request waits in the
/// router's queue (or is refused as overloaded when the queue is full). `None` means no limit;
/// the default has none.
///
/// ```
/// use dynamo_router::{BusyThresholds, WorkerLoad};
///
/// let limits = BusyThresholds { max_active_requests: Some(2), ..Default::default() };
/// let load = WorkerLoad { active_requests: 2, ..Default::default() };
/// assert!(limits.is_busy(&load));
/// assert!(!BusyThresholds::default().is_busy(&load));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusyThresholds {
    /// Busy at this many active requests.
    pub max_active_requests: Option<u32>,
    /// Busy at this many prompt tokens waiting for prefill.
    pub max_prefill_tokens: Option<u64>,
    /// Busy at this many KV blocks held by active requests (set it near the engine's cache
    /// size in blocks).
    pub max_decode_blocks: Option<u64>,
}

impl BusyThresholds {
    /// Whether a worker with this load is busy.
    pub fn is_busy(&self, load: &WorkerLoad) -> bool {
        let over = |limit: Option<u64>, value: u64| limit.is_some_and(|limit| value >= limit);
        over(
            self.max_active_requests.map(u64::from),
            u64::from(load.active_requests),
        ) || over(self.max_prefill_tokens, load.active_prefill_tokens)
            || over(self.max_decode_blocks, load.active_decode_blocks)
    }
}
