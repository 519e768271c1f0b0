//! The overlap query: how deep each worker's cached prefix goes for a request's blocks.

use dynamo_core::{SequenceHash, WorkerId};
use smallvec::SmallVec;

use super::KvIndex;
use super::overlap::{Overlaps, TierOverlap};
use super::residents::{Resident, fastest_tier, slot_of, tiers_of};
use super::workers::WorkerTable;

/// The most blocks looked up ahead of the merge.
const MAX_BATCH: usize = 16;

impl KvIndex {
    /// For a request's sequence hashes, how deep each worker's cached prefix goes.
    ///
    /// The walk looks up blocks in growing batches (4, 8, then 16 at a time) before merging
    /// them: the lookups of one batch do not depend on each other, so the processor overlaps
    /// their cache misses. A batch may look up a few blocks past the end of the match; that is
    /// the price of the overlap, and it is capped by the batch size.
    pub fn overlaps(&self, hashes: &[SequenceHash]) -> Overlaps {
        let Some(first) = hashes.first().and_then(|hash| self.blocks.get(hash)) else {
            return Overlaps::default();
        };
        let mut walk = Walk::start(first.as_slice(&self.spill));
        let mut position = 1;
        let mut batch = 4;
        'blocks: while position < hashes.len() {
            let end = (position + batch).min(hashes.len());
            let mut found = [None; MAX_BATCH];
            for (slot, hash) in found.iter_mut().zip(&hashes[position..end]) {
                *slot = self.blocks.get(hash);
            }
            for residents in &found[..end - position] {
                let Some(residents) = residents else {
                    break 'blocks;
                };
                if !walk.step(residents.as_slice(&self.spill), &self.workers) {
                    break 'blocks;
                }
            }
            position = end;
            batch = (batch * 2).min(MAX_BATCH);
        }
        Overlaps {
            workers: walk.finish(&self.workers),
        }
    }
}

/// The state of one walk down a request's blocks.
///
/// Along a cached prefix the residents of consecutive blocks are usually the same workers in
/// the same tiers. Such a block is only counted (`pending`), with one slice comparison, and
/// added to every live worker's overlap when the residents change or the walk ends; so a prefix
/// that 24 workers hold costs a comparison per block, not 24 updates.
///
/// The answer is the only allocation of a walk that starts with at most [`INLINE`] workers.
struct Walk {
    /// The workers whose prefix is still going, as they hold the last block, sorted by slot.
    alive: SmallVec<[Resident; INLINE]>,
    /// The overlap of each live worker, not counting `pending`.
    counts: SmallVec<[TierOverlap; INLINE]>,
    /// Blocks held by exactly `alive`, not yet added to `counts`.
    pending: u32,
    /// Workers whose prefix ended, with their overlap: the answer.
    done: Vec<(WorkerId, TierOverlap)>,
}

/// Live workers kept without allocating.
const INLINE: usize = 8;

impl Walk {
    fn start(first: &[Resident]) -> Self {
        Walk {
            alive: SmallVec::from_slice(first),
            counts: SmallVec::from_elem(TierOverlap::default(), first.len()),
            pending: 1,
            done: Vec::with_capacity(first.len()),
        }
    }

    /// Go one block further; `false` when no worker's prefix goes on.
    fn step(&mut self, residents: &[Resident], workers: &WorkerTable) -> bool {
        // Mostly one or two residents: compare inline rather than through `memcmp`.
        if residents.len() == self.alive.len()
            && residents.iter().zip(&self.alive).all(|(a, b)| a == b)
        {
            self.pending += 1;
            return true;
        }
        self.flush();
        // Both lists are sorted by slot: a merge.
        let (mut kept, mut j) = (0, 0);
        for k in 0..self.alive.len() {
            let slot = slot_of(self.alive[k]);
            while j < residents.len() && slot_of(residents[j]) < slot {
                j += 1;
            }
            let mut overlap = self.counts[k];
            if j < residents.len() && slot_of(residents[j]) == slot {
                overlap.add(fastest_tier(tiers_of(residents[j])));
                self.alive[kept] = residents[j];
                self.counts[kept] = overlap;
                kept += 1;
            } else if let Some(worker) = workers.id(slot) {
                self.done.push((worker, overlap));
            }
        }
        self.alive.truncate(kept);
        self.counts.truncate(kept);
        kept > 0
    }

    /// Add the pending blocks to every live worker.
    fn flush(&mut self) {
        if self.pending > 0 {
            for (resident, overlap) in self.alive.iter().zip(&mut self.counts) {
                overlap.add_n(fastest_tier(tiers_of(*resident)), self.pending);
            }
            self.pending = 0;
        }
    }

    /// Every worker with a non-empty prefix, and its overlap.
    fn finish(mut self, workers: &WorkerTable) -> Vec<(WorkerId, TierOverlap)> {
        self.flush();
        for (resident, overlap) in self.alive.iter().zip(self.counts) {
            if let Some(worker) = workers.id(slot_of(*resident)) {
                self.done.push((worker, overlap));
            }
        }
        self.done
    }
}
