//! Approximate mode: predicted cache contents for engines that publish no KV events.
//!
//! Without events the router can still learn where prefixes live: it sent them there. Each
//! routing decision records the request's blocks as held by the chosen worker. A prediction
//! expires after a time to live (an engine evicts what nobody reuses), and each worker keeps at
//! most a capacity of predicted blocks, dropping the least recently routed first (an engine's
//! cache is finite). Queries then work exactly as on the event-fed [`KvIndex`].
//!
//! A worker's predictions are kept as the requests routed to it, one record each, rather than
//! one entry per block ([`records`]): recording a request appends its blocks, and expiry pops
//! whole records.

mod records;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, SequenceHash, WorkerId};
use parking_lot::Mutex;

use crate::index::{IndexError, KvIndex, Overlaps};
use records::Routed;

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
    workers: HashMap<WorkerId, Routed, foldhash::fast::RandomState>,
    config: ApproxConfig,
    /// When to look for expired predictions next: every 1/64 of the TTL, so that a query does
    /// not visit every worker.
    next_expiry: Option<Instant>,
    /// Reused buffers: the positions of a request's blocks the worker held already, and the
    /// blocks a worker no longer holds.
    held: Vec<u32>,
    gone: Vec<SequenceHash>,
    /// Bumped by every change to the predictions.
    version: u64,
    /// The last overlap query, while nothing changed since: its blocks, and each worker's
    /// predicted prefix. The request is usually recorded right after it was asked about, and
    /// the prefix its worker holds then needs no look-up.
    last_query: LastQuery,
}

#[derive(Debug, Default)]
struct LastQuery {
    /// The version the answer is valid at (`None`: no answer).
    version: Option<u64>,
    blocks: Vec<SequenceHash>,
    prefixes: Vec<(WorkerId, u32)>,
}

impl LastQuery {
    /// How many leading blocks of `blocks` `worker` is known to hold at `version`.
    fn known(&self, version: u64, worker: WorkerId, blocks: &[SequenceHash]) -> usize {
        if self.version != Some(version) || self.blocks != blocks {
            return 0;
        }
        self.prefixes
            .iter()
            .find(|(w, _)| *w == worker)
            .map_or(0, |&(_, depth)| depth as usize)
    }

    fn remember(&mut self, version: u64, blocks: &[SequenceHash], answer: &Overlaps) {
        self.version = Some(version);
        self.blocks.clear();
        self.blocks.extend_from_slice(blocks);
        self.prefixes.clear();
        self.prefixes.extend(
            answer
                .iter()
                .map(|(worker, overlap)| (worker, overlap.total())),
        );
    }
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
                held: Vec::new(),
                gone: Vec::new(),
                version: 0,
                last_query: LastQuery::default(),
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
        let Predictions {
            index,
            workers,
            config,
            held,
            gone,
            version,
            last_query,
            ..
        } = &mut *guard;
        held.clear();
        let known = last_query.known(*version, worker, blocks);
        index.hold(worker, blocks, known, held)?;
        *version += 1;
        let routed = workers.entry(worker).or_default();
        routed.touch(blocks, held, now);
        if let Some(capacity) = config.capacity_blocks
            && routed.len() > capacity
        {
            gone.clear();
            routed.pop_oldest(routed.len() - capacity, gone);
            index.release(worker, gone);
        }
        Ok(())
    }

    /// How deep each worker's predicted prefix goes at `now`, after forgetting what expired.
    pub fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        let mut guard = self.inner.lock();
        let predictions = &mut *guard;
        predictions.expire(now);
        let answer = predictions.index.overlaps(blocks);
        predictions
            .last_query
            .remember(predictions.version, blocks, &answer);
        answer
    }

    /// Forget every prediction about `worker`.
    pub fn remove_worker(&self, worker: WorkerId) {
        let mut predictions = self.inner.lock();
        predictions.version += 1;
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
        let expired = |routed_at: Instant| now.saturating_duration_since(routed_at) >= ttl;
        for (&worker, routed) in &mut self.workers {
            self.gone.clear();
            routed.pop_expired(expired, &mut self.gone);
            if !self.gone.is_empty() {
                self.version += 1;
                self.index.release(worker, &self.gone);
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
