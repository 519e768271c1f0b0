//! Busy thresholds: a worker over any limit takes no new request until its load falls.

use crate::load::WorkerLoad;

/// Limits on a worker's booked load; a worker at or over any of them (above, for the share of
/// its cache) is busy.
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
///
/// The decode blocks can also be limited to a share of each worker's own KV cache
/// ([`max_decode_share`](Self::max_decode_share)), for workers of different cache sizes:
///
/// ```
/// use dynamo_router::{BusyThresholds, WorkerLoad};
///
/// let limits = BusyThresholds { max_decode_share: Some(0.85), ..Default::default() };
/// let load = |blocks, capacity| WorkerLoad {
///     active_decode_blocks: blocks,
///     kv_capacity_blocks: capacity,
///     ..Default::default()
/// };
/// // 85% of 512 blocks is 435.2: busy from 436 blocks.
/// assert!(!limits.is_busy(&load(435, Some(512))));
/// assert!(limits.is_busy(&load(436, Some(512))));
/// // A worker whose cache size is not known is never busy by its share.
/// assert!(!limits.is_busy(&load(100_000, None)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BusyThresholds {
    /// Busy at this many active requests.
    pub max_active_requests: Option<u32>,
    /// Busy at this many prompt tokens waiting for prefill.
    pub max_prefill_tokens: Option<u64>,
    /// Busy at this many KV blocks held by active requests (set it near the engine's cache
    /// size in blocks).
    pub max_decode_blocks: Option<u64>,
    /// Busy above this share (above 0, at most 1) of the worker's own KV cache
    /// ([`WorkerLoad::kv_capacity_blocks`]) held by active requests. A worker whose cache
    /// size is not known (`None` or 0) is never busy by it; one that is not a number (NaN)
    /// makes no worker busy.
    pub max_decode_share: Option<f64>,
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
            || self
                .max_decode_share
                .is_some_and(|share| over_share(share, load))
    }
}

/// Whether `load` holds more than `share` of its worker's known KV cache.
fn over_share(share: f64, load: &WorkerLoad) -> bool {
    match load.kv_capacity_blocks {
        Some(capacity) if capacity > 0 => {
            load.active_decode_blocks as f64 > share * capacity as f64
        }
        _ => false,
    }
}

/// Field by field, the share by its bits, so that equality is an equivalence (a NaN share
/// equals itself) and `Eq` holds.
impl PartialEq for BusyThresholds {
    fn eq(&self, other: &Self) -> bool {
        self.max_active_requests == other.max_active_requests
            && self.max_prefill_tokens == other.max_prefill_tokens
            && self.max_decode_blocks == other.max_decode_blocks
            && self.max_decode_share.map(f64::to_bits) == other.max_decode_share.map(f64::to_bits)
    }
}

impl Eq for BusyThresholds {}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(blocks: u64, capacity: Option<u64>) -> WorkerLoad {
        WorkerLoad {
            active_decode_blocks: blocks,
            kv_capacity_blocks: capacity,
            ..WorkerLoad::default()
        }
    }

    fn share(share: f64) -> BusyThresholds {
        BusyThresholds {
            max_decode_share: Some(share),
            ..BusyThresholds::default()
        }
    }

    #[test]
    fn a_share_is_reached_above_it_of_each_workers_own_cache() {
        let limits = share(0.5);
        // Half of 512 is 256 blocks: busy from 257.
        assert!(!limits.is_busy(&load(256, Some(512))));
        assert!(limits.is_busy(&load(257, Some(512))));
        // Half of 64 is 32: the same share, a smaller cache.
        assert!(!limits.is_busy(&load(32, Some(64))));
        assert!(limits.is_busy(&load(33, Some(64))));
        // The whole cache: busy only past it.
        assert!(!share(1.0).is_busy(&load(64, Some(64))));
        assert!(share(1.0).is_busy(&load(65, Some(64))));
    }

    #[test]
    fn a_worker_of_unknown_cache_size_is_never_busy_by_its_share() {
        for capacity in [None, Some(0)] {
            assert!(
                !share(0.01).is_busy(&load(u64::MAX, capacity)),
                "{capacity:?}"
            );
        }
        assert!(!share(f64::NAN).is_busy(&load(u64::MAX, Some(1))));
    }

    #[test]
    fn a_share_adds_to_the_other_limits() {
        let limits = BusyThresholds {
            max_active_requests: Some(4),
            max_decode_share: Some(0.5),
            ..BusyThresholds::default()
        };
        let busy_by_requests = WorkerLoad {
            active_requests: 4,
            ..load(0, Some(64))
        };
        assert!(limits.is_busy(&busy_by_requests));
        assert!(limits.is_busy(&load(33, Some(64))));
        assert!(!limits.is_busy(&load(32, Some(64))));
    }

    #[test]
    fn thresholds_equal_by_their_shares_bits() {
        assert_eq!(share(0.5), share(0.5));
        assert_eq!(share(f64::NAN), share(f64::NAN));
        assert_ne!(share(0.5), share(0.25));
        assert_ne!(share(0.5), BusyThresholds::default());
    }
}
