//! Where the router learns which worker caches what: KV events, or its own decisions.

use std::time::Instant;

use dynamo_core::{SequenceHash, WorkerId};

use crate::approx::ApproxIndex;
use crate::index::{Overlaps, SharedIndex};

/// What the router knows of the workers' caches.
///
/// Two implementations ship with the crate: [`SharedIndex`], fed by the engines' KV events,
/// and [`ApproxIndex`], fed by the router's own decisions for engines that publish none.
pub trait OverlapSource: Send + Sync + 'static {
    /// How deep each worker's cached prefix goes for these sequence hashes, at `now`.
    fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps;

    /// [`overlaps`](Self::overlaps) written into `answer`, replacing what it held: a caller
    /// that asks for every decision keeps one answer, whose buffer a source can reuse instead
    /// of allocating when many workers hold a prefix. The default assigns `overlaps`' answer.
    fn overlaps_into(&self, blocks: &[SequenceHash], now: Instant, answer: &mut Overlaps) {
        *answer = self.overlaps(blocks, now);
    }

    /// The router just sent a request with these prompt blocks to `worker`. Sources that learn
    /// from events ignore it.
    fn routed(&self, worker: WorkerId, blocks: &[SequenceHash], now: Instant);

    /// `worker` left: forget everything it held.
    fn remove_worker(&self, worker: WorkerId);
}

impl std::fmt::Debug for dyn OverlapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverlapSource")
    }
}

impl OverlapSource for SharedIndex {
    fn overlaps(&self, blocks: &[SequenceHash], _now: Instant) -> Overlaps {
        SharedIndex::overlaps(self, blocks)
    }

    fn overlaps_into(&self, blocks: &[SequenceHash], _now: Instant, answer: &mut Overlaps) {
        SharedIndex::overlaps_into(self, blocks, answer);
    }

    fn routed(&self, _worker: WorkerId, _blocks: &[SequenceHash], _now: Instant) {}

    fn remove_worker(&self, worker: WorkerId) {
        SharedIndex::remove_worker(self, worker);
    }
}

impl OverlapSource for ApproxIndex {
    fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        ApproxIndex::overlaps(self, blocks, now)
    }

    fn overlaps_into(&self, blocks: &[SequenceHash], now: Instant, answer: &mut Overlaps) {
        ApproxIndex::overlaps_into(self, blocks, now, answer);
    }

    fn routed(&self, worker: WorkerId, blocks: &[SequenceHash], now: Instant) {
        // The only possible error is an index full of workers; the prediction is then skipped,
        // which costs cache hits, never correctness. It is counted for the operator.
        if self.record(worker, blocks, now).is_err() {
            metrics::counter!("dynamo_router_approx_skipped_total").increment(1);
        }
    }

    fn remove_worker(&self, worker: WorkerId) {
        ApproxIndex::remove_worker(self, worker);
    }
}

impl<S: OverlapSource + ?Sized> OverlapSource for std::sync::Arc<S> {
    fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        (**self).overlaps(blocks, now)
    }

    fn overlaps_into(&self, blocks: &[SequenceHash], now: Instant, answer: &mut Overlaps) {
        (**self).overlaps_into(blocks, now, answer);
    }

    fn routed(&self, worker: WorkerId, blocks: &[SequenceHash], now: Instant) {
        (**self).routed(worker, blocks, now);
    }

    fn remove_worker(&self, worker: WorkerId) {
        (**self).remove_worker(worker);
    }
}

impl<S: OverlapSource + ?Sized> OverlapSource for Box<S> {
    fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        (**self).overlaps(blocks, now)
    }

    fn overlaps_into(&self, blocks: &[SequenceHash], now: Instant, answer: &mut Overlaps) {
        (**self).overlaps_into(blocks, now, answer);
    }

    fn routed(&self, worker: WorkerId, blocks: &[SequenceHash], now: Instant) {
        (**self).routed(worker, blocks, now);
    }

    fn remove_worker(&self, worker: WorkerId) {
        (**self).remove_worker(worker);
    }
}
