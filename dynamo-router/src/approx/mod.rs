//! Approximate mode: predicted cache contents for engines that publish no KV events.
//!
//! Without events the router can still learn where prefixes live: it sent them there. Each
//! routing decision records the request's blocks as held by the chosen worker. A prediction
//! expires after a time to live (an engine evicts what nobody reuses), and each worker keeps at
//! most a capacity of predicted blocks, dropping the least recently routed first (an engine's
//! cache is finite). Queries answer as the event-fed [`KvIndex`](crate::KvIndex) would.
//!
//! The predictions have their own store ([`store`]) rather than a [`KvIndex`](crate::KvIndex):
//! one map from a block to the workers predicted to hold it, each with its latest touch, and
//! each worker's requests as one record each ([`records`]). Recording a request is one map
//! update per block and one record; a touch is forgotten, when its request expires or its
//! worker is over capacity, only if it is still the worker's latest touch of the block: a
//! block's only holder without a look-up (the map reads it as dead once its touch has left the
//! worker's queue, and sweeps the dead when it fills), a listed holder by one.

mod holders;
mod records;
mod store;
mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, SequenceHash, WorkerId};
use parking_lot::Mutex;

use crate::index::{IndexError, Overlaps};
use store::Store;

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
    store: Store,
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

/// Stale touches a worker's records may carry beyond its live blocks before compacting.
const SLACK: usize = 1024;

impl ApproxIndex {
    /// An empty approximate index for blocks of `block_size` tokens (the size the recorded
    /// sequence hashes were made with; the predictions need nothing more of it).
    pub fn new(_block_size: BlockSize, config: ApproxConfig) -> Self {
        Self::with_slack(config, SLACK)
    }

    fn with_slack(config: ApproxConfig, slack: usize) -> Self {
        ApproxIndex {
            inner: Arc::new(Mutex::new(Predictions {
                store: Store::new(slack),
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
        let mut predictions = self.inner.lock();
        let capacity = predictions.config.capacity_blocks;
        predictions.store.record(worker, blocks, now, capacity)
    }

    /// How deep each worker's predicted prefix goes at `now`, after forgetting what expired.
    pub fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        let mut answer = Overlaps::default();
        self.overlaps_into(blocks, now, &mut answer);
        answer
    }

    /// [`overlaps`](Self::overlaps) written into `answer` (its earlier workers replaced), whose
    /// buffer is reused: no allocation once it has held as many workers.
    pub(crate) fn overlaps_into(
        &self,
        blocks: &[SequenceHash],
        now: Instant,
        answer: &mut Overlaps,
    ) {
        answer.workers.clear();
        let mut predictions = self.inner.lock();
        predictions.expire(now);
        predictions.store.overlaps(blocks, answer);
    }

    /// Forget every prediction about `worker`.
    pub fn remove_worker(&self, worker: WorkerId) {
        self.inner.lock().store.remove_worker(worker);
    }

    /// Every worker's predicted blocks, least recently routed first (for another replica).
    pub(crate) fn export(&self) -> Vec<(WorkerId, Vec<SequenceHash>)> {
        self.inner.lock().store.export()
    }

    /// The number of (worker, block) predictions held.
    pub fn predicted_blocks(&self) -> u64 {
        self.inner.lock().store.predicted_blocks()
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
        self.store
            .expire(|routed_at| now.saturating_duration_since(routed_at) >= ttl);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
