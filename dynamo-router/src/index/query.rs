//! The overlap query: how deep each worker's cached prefix goes for a request's blocks.

use dynamo_core::SequenceHash;
use smallvec::SmallVec;

use super::KvIndex;
use super::overlap::{Answer, Overlaps, TierOverlap};
use super::residents::{Resident, fastest_tier, slot_of, tiers_of};
use super::runs::common_prefix;
use super::workers::WorkerTable;

impl KvIndex {
    /// For a request's sequence hashes, how deep each worker's cached prefix goes.
    ///
    /// The walk finds the first block in the map, then compares the request's next hashes with
    /// the positions that follow it in its run, and takes the residents of each segment it
    /// crosses once for all its positions. Where the run and the request part (or the run's
    /// positions are dead), the next block is looked up in the map again, and so on. The
    /// comparison, the segments and the next lookup do not wait on each other, so their cache
    /// misses overlap.
    pub fn overlaps(&self, hashes: &[SequenceHash]) -> Overlaps {
        let Some(first) = hashes
            .first()
            .and_then(|&hash| self.blocks.get(&self.runs, hash))
        else {
            return Overlaps::default();
        };
        let mut walk: Option<Walk> = None;
        // `loc` is where `hashes[next]` sits, a live position (the map has only those).
        let (mut loc, mut next) = (first, 0);
        'walk: loop {
            let run = &self.runs.runs[loc.run as usize];
            let from = loc.offset;
            let mut seg = run.seg_at(from);
            let ahead = run.hashes.get(from as usize + 1..).unwrap_or_default();
            let matched = 1 + common_prefix(&hashes[next + 1..], ahead);
            let end = from + matched as u32;
            // The block after the stretch, looked up before the segments are read.
            let beyond = hashes
                .get(next + matched)
                .and_then(|&hash| self.blocks.get(&self.runs, hash));
            // Most matches lie in one segment of the first run they find: their answer is that
            // segment's residents, each `matched` blocks deep, with no walk to keep.
            if walk.is_none() && beyond.is_none() && run.seg_end(seg) >= end {
                let residents = run.segs[seg].residents.as_slice(&self.runs.spill);
                return Overlaps {
                    workers: one_segment(residents, matched as u32, &self.workers),
                };
            }
            self.runs.touch_spilled(run, seg, end);
            let mut at = from;
            while at < end {
                let residents = run.segs[seg].residents.as_slice(&self.runs.spill);
                if residents.is_empty() {
                    break;
                }
                let stop = run.seg_end(seg).min(end);
                match &mut walk {
                    None => walk = Some(Walk::start(residents, stop - at)),
                    Some(walk) => {
                        if !walk.step(residents, stop - at, &self.workers) {
                            break 'walk;
                        }
                    }
                }
                at = stop;
                seg += 1;
            }
            next += (at - from) as usize;
            // A dead stretch ends the run's help early: look the block up where it stopped.
            let found = if at == end {
                beyond
            } else {
                hashes
                    .get(next)
                    .and_then(|&hash| self.blocks.get(&self.runs, hash))
            };
            let Some(found) = found else {
                break;
            };
            loc = found;
        }
        let Some(walk) = walk else {
            return Overlaps::default();
        };
        Overlaps {
            workers: walk.finish(&self.workers),
        }
    }
}

/// The answer of a match whose `blocks` blocks all have the same `residents`.
fn one_segment(residents: &[Resident], blocks: u32, workers: &WorkerTable) -> Answer {
    let mut answer = Answer::with_capacity(residents.len());
    for &resident in residents {
        if let Some(worker) = workers.id(slot_of(resident)) {
            let mut overlap = TierOverlap::default();
            overlap.add_n(fastest_tier(tiers_of(resident)), blocks);
            answer.push((worker, overlap));
        }
    }
    answer
}

/// The state of one walk down a request's blocks.
///
/// Along a cached prefix the residents of consecutive blocks are usually the same workers in
/// the same tiers. Such a block is only counted (`pending`), with one slice comparison, and
/// added to every live worker's overlap when the residents change or the walk ends; so a prefix
/// that 24 workers hold costs a comparison per segment, not 24 updates per block.
///
/// A walk that starts with at most [`INLINE`] workers and ends with at most two allocates nothing.
struct Walk {
    /// The workers whose prefix is still going, as they hold the last block, sorted by slot.
    alive: SmallVec<[Resident; INLINE]>,
    /// The overlap of each live worker, not counting `pending`.
    counts: SmallVec<[TierOverlap; INLINE]>,
    /// Blocks held by exactly `alive`, not yet added to `counts`.
    pending: u32,
    /// Workers whose prefix ended, with their overlap: the answer.
    done: Answer,
}

/// Live workers kept without allocating.
const INLINE: usize = 8;

impl Walk {
    /// A walk whose first `blocks` blocks are held by `first`.
    fn start(first: &[Resident], blocks: u32) -> Self {
        Walk {
            alive: SmallVec::from_slice(first),
            counts: SmallVec::from_elem(TierOverlap::default(), first.len()),
            pending: blocks,
            // Every worker of the answer holds the first block: one allocation at most.
            done: Answer::with_capacity(first.len()),
        }
    }

    /// Go `blocks` blocks further, all held by `residents`; `false` when no worker's prefix
    /// goes on.
    fn step(&mut self, residents: &[Resident], blocks: u32, workers: &WorkerTable) -> bool {
        // Mostly one or two residents: compare inline rather than through `memcmp`.
        if residents.len() == self.alive.len()
            && residents.iter().zip(&self.alive).all(|(a, b)| a == b)
        {
            self.pending += blocks;
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
        self.pending = blocks - 1;
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
    fn finish(mut self, workers: &WorkerTable) -> Answer {
        self.flush();
        for (resident, overlap) in self.alive.iter().zip(self.counts) {
            if let Some(worker) = workers.id(slot_of(*resident)) {
                self.done.push((worker, overlap));
            }
        }
        self.done
    }
}
