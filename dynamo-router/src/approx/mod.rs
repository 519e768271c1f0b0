//! Approximate mode: predicted cache contents for engines that publish no KV events.
//!
//! Without events the router can still learn where prefixes live: it sent them there. Each
//! routing decision records the request's blocks as held by the chosen worker. A prediction
//! expires after a time to live (an engine evicts what nobody reuses), and each worker keeps at
//! most a capacity of predicted blocks, dropping the least recently routed first (an engine's
//! cache is finite). Queries then work exactly as on the event-fed [`KvIndex`].

mod recency;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, SequenceHash, WorkerId};
use parking_lot::Mutex;

use crate::index::{IndexError, KvIndex, Overlaps};
use recency::Recency;

/// How long and how much the approximate mode remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApproxConfig {
    /// A predicted block is forgotten this long after the last request that routed it (checked
    /// every 1/64 of the TTL, so up to that much later). Default: 120 s.
    pub ttl: Option<Duration>,
    /// At most this many predicted blocks per worker, least recently routed dropped first.
    /// Default: none (bounded by the TTL alone). Set it to the engine's cache size in blocks.
    pub capacity_blocks: Option<usize>,
}

impl Default for ApproxConfig {
    fn default() -> Self {
        ApproxConfig {
            ttl: Some(Duration::from_secs(120)),
            capacity_blocks: None,
        }
    }
}

#[derive(Debug)]
struct Predictions {
    index: KvIndex,
    /// Each worker's predicted blocks, least recently routed first.
    workers: HashMap<WorkerId, Recency, foldhash::fast::RandomState>,
    config: ApproxConfig,
    /// When to look for expired predictions next: every 1/64 of the TTL, so that a query does
    /// not visit every worker.
    next_expiry: Option<Instant>,
}

/// A prefix index fed by the router's own decisions instead of KV events; cheap to clone.
///
/// ```
/// use std::time::{Duration, Instant};
/// use dynamo_core::{BlockSize, SequenceHash, WorkerId};
/// use dynamo_router::{ApproxConfig, ApproxIndex};
///
/// let index = ApproxIndex::new(BlockSize::new(64)?, ApproxConfig::default());
/// let blocks = [SequenceHash(1), SequenceHash(2)];
/// let start = Instant::now();
/// index.record(WorkerId::new(1), &blocks, start)?;
/// assert_eq!(index.overlaps(&blocks, start).get(WorkerId::new(1)).device, 2);
/// // Two minutes later, nobody routed that prefix again: the prediction expired.
/// let later = start + Duration::from_secs(121);
/// assert!(index.overlaps(&blocks, later).is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ApproxIndex {
    inner: Arc<Mutex<Predictions>>,
}

impl ApproxIndex {
    /// An empty approximate index for blocks of `block_size` tokens.
    pub fn new(block_size: BlockSize, config: ApproxConfig) -> Self {
        ApproxIndex {
            inner: Arc::new(Mutex::new(Predictions {
                index: KvIndex::new(block_size),
                workers: HashMap::default(),
                config,
                next_expiry: None,
            })),
        }
    }

    /// Record that `worker` was sent a request with these prompt blocks at `now`: it will hold
    /// them shortly.
    ///
    /// # Errors
    ///
    /// [`IndexError::TooManyWorkers`] if the index cannot track another worker.
    pub fn record(
        &self,
        worker: WorkerId,
        blocks: &[SequenceHash],
        now: Instant,
    ) -> Result<(), IndexError> {
        let mut guard = self.inner.lock();
        let predictions = &mut *guard;
        predictions.index.hold(worker, blocks)?;
        let held = predictions.workers.entry(worker).or_default();
        held.touch_all(blocks, now);
        if let Some(capacity) = predictions.config.capacity_blocks {
            let mut evicted = Vec::new();
            while held.len() > capacity {
                let Some(hash) = held.pop_oldest() else {
                    break;
                };
                evicted.push(hash);
            }
            predictions.index.release(worker, &evicted);
        }
        Ok(())
    }

    /// How deep each worker's predicted prefix goes at `now`, after forgetting what expired.
    pub fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        let mut predictions = self.inner.lock();
        predictions.expire(now);
        predictions.index.overlaps(blocks)
    }

    /// Forget every prediction about `worker`.
    pub fn remove_worker(&self, worker: WorkerId) {
        let mut predictions = self.inner.lock();
        predictions.workers.remove(&worker);
        predictions.index.remove_worker(worker);
    }

    /// Every worker's predicted blocks, least recently routed first (for another replica).
    pub(crate) fn export(&self) -> Vec<(WorkerId, Vec<SequenceHash>)> {
        let predictions = self.inner.lock();
        predictions
            .workers
            .iter()
            .map(|(&worker, held)| (worker, held.oldest_first().collect()))
            .collect()
    }

    /// The number of (worker, block) predictions held.
    pub fn predicted_blocks(&self) -> u64 {
        self.inner.lock().index.resident_blocks()
    }
}

impl Predictions {
    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.config.ttl else {
            return;
        };
        if self.next_expiry.is_some_and(|next| now < next) {
            return;
        }
        self.next_expiry = Some(now + ttl / 64);
        for (&worker, held) in &mut self.workers {
            let mut expired = Vec::new();
            while let Some(hash) =
                held.pop_oldest_if(|routed_at| now.saturating_duration_since(routed_at) >= ttl)
            {
                expired.push(hash);
            }
            self.index.release(worker, &expired);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(ids: &[u64]) -> Vec<SequenceHash> {
        ids.iter().map(|&id| SequenceHash(id)).collect()
    }

    #[test]
    fn capacity_drops_the_least_recently_routed_blocks() {
        let config = ApproxConfig {
            ttl: None,
            capacity_blocks: Some(3),
        };
        let index = ApproxIndex::new(BlockSize::new(4).unwrap(), config);
        let worker = WorkerId::new(1);
        let now = Instant::now();
        index.record(worker, &hashes(&[1, 2]), now).unwrap();
        index.record(worker, &hashes(&[3]), now).unwrap();
        // Routing 1 again makes 2 the least recent; adding 4 evicts it.
        index.record(worker, &hashes(&[1]), now).unwrap();
        index.record(worker, &hashes(&[4]), now).unwrap();
        assert_eq!(index.predicted_blocks(), 3);
        assert_eq!(index.overlaps(&hashes(&[1, 2]), now).get(worker).device, 1);
        assert_eq!(index.overlaps(&hashes(&[3]), now).get(worker).device, 1);
    }

    #[test]
    fn routing_again_renews_the_time_to_live() {
        let index = ApproxIndex::new(BlockSize::new(4).unwrap(), ApproxConfig::default());
        let worker = WorkerId::new(7);
        let start = Instant::now();
        let blocks = hashes(&[10, 11]);
        index.record(worker, &blocks, start).unwrap();
        index
            .record(worker, &blocks[..1], start + Duration::from_secs(100))
            .unwrap();
        let later = start + Duration::from_secs(150);
        assert_eq!(index.overlaps(&blocks, later).get(worker).device, 1);
        assert_eq!(index.predicted_blocks(), 1);
        index.remove_worker(worker);
        assert!(index.overlaps(&blocks, later).is_empty());
    }
}
