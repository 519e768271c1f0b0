//! The walk that follows workers of any slot down a request's blocks: the live workers in a
//! list, merged with each segment's residents (see [`super::walk`] for the one that most walks
//! take, with slots below 64).

use std::cell::Cell;

use smallvec::SmallVec;

use super::overlap::{Answer, TierOverlap};
use super::residents::{Resident, fastest_tier, slot_of, tiers_of};
use super::walk::DEVICE;
use super::workers::WorkerTable;

/// The state of one walk down a request's blocks, for workers of any slot: the live workers in
/// a list sorted by slot, merged with each segment's residents.
///
/// Along a cached prefix the residents of consecutive blocks are usually the same workers in
/// the same tiers. Such a block is only counted (`pending`), with one slice comparison, and
/// added to every live worker's overlap when the residents change or the walk ends; so a prefix
/// that 24 workers hold costs a comparison per segment, not 24 updates per block.
///
/// Workers whose prefix ended go into the answer as they end (`done`), the live ones when the
/// walk finishes. A walk that starts with at most [`INLINE`] workers keeps them inline; one
/// that starts with more takes its thread's [`SPARE`] buffers and gives them back when it
/// finishes. So a walk allocates nothing but the answer's room for its workers, which an answer
/// that held as many workers already has, once its thread has walked as many.
pub(super) struct MergeWalk {
    /// The workers whose prefix is still going, as they hold the last block, sorted by slot.
    alive: SmallVec<[Resident; INLINE]>,
    /// The overlap of each live worker, not counting `pending`.
    counts: SmallVec<[TierOverlap; INLINE]>,
    /// Blocks held by exactly `alive`, not yet added to `counts`.
    pending: u32,
}

/// Live workers kept without allocating.
const INLINE: usize = 8;

/// The buffers of a walk that started with more than [`INLINE`] workers, kept for the next.
#[derive(Debug, Default)]
struct Spare {
    alive: Vec<Resident>,
    counts: Vec<TierOverlap>,
}

thread_local! {
    /// Each thread's spare walk buffers: a router queries from a few threads, each of which
    /// keeps room for the most workers that held a prompt's first block, 20 bytes a worker.
    static SPARE: Cell<Spare> = const {
        Cell::new(Spare {
            alive: Vec::new(),
            counts: Vec::new(),
        })
    };
}

impl MergeWalk {
    /// A walk whose first `blocks` blocks are held by `first`, its answer the empty `done`.
    pub(super) fn start(first: &[Resident], blocks: u32, done: &mut Answer) -> Self {
        // Every worker of the answer holds the first block: room for them all at once.
        done.reserve(first.len());
        if first.len() <= INLINE {
            return MergeWalk {
                alive: SmallVec::from_slice(first),
                counts: SmallVec::from_elem(TierOverlap::default(), first.len()),
                pending: blocks,
            };
        }
        let Spare {
            mut alive,
            mut counts,
        } = SPARE.take();
        alive.clear();
        alive.extend_from_slice(first);
        counts.clear();
        counts.resize(first.len(), TierOverlap::default());
        // Longer than `INLINE`: the vectors' buffers are kept, not copied.
        MergeWalk {
            alive: SmallVec::from_vec(alive),
            counts: SmallVec::from_vec(counts),
            pending: blocks,
        }
    }

    /// Go `blocks` blocks further, all held by `residents`, the workers whose prefix ends going
    /// into `done`; `false` when no worker's prefix goes on.
    pub(super) fn step(
        &mut self,
        residents: &[Resident],
        blocks: u32,
        workers: &WorkerTable,
        done: &mut Answer,
    ) -> bool {
        // Mostly one or two residents: compare inline rather than through `memcmp`.
        if residents.len() == self.alive.len()
            && residents.iter().zip(&self.alive).all(|(a, b)| a == b)
        {
            self.pending += blocks;
            return true;
        }
        // Both lists are sorted by slot: a merge, over plain slices (no inline-or-spilled check
        // per access), the pending blocks added to each live worker as it is visited rather
        // than in a pass of their own.
        let pending = self.pending;
        let alive = self.alive.as_mut_slice();
        let counts = &mut self.counts.as_mut_slice()[..alive.len()];
        let (mut kept, mut j) = (0, 0);
        for k in 0..alive.len() {
            let live = alive[k];
            let slot = slot_of(live);
            let mut overlap = counts[k];
            while j < residents.len() && slot_of(residents[j]) < slot {
                j += 1;
            }
            match residents.get(j) {
                Some(&resident) if slot_of(resident) == slot => {
                    if tiers_of(live) & tiers_of(resident) & DEVICE != 0 {
                        // The usual case, in one addition: the pending blocks and this one
                        // are all in device memory, the fastest tier.
                        overlap.device += pending + 1;
                    } else {
                        overlap.add_n(fastest_tier(tiers_of(live)), pending);
                        overlap.add(fastest_tier(tiers_of(resident)));
                    }
                    alive[kept] = resident;
                    counts[kept] = overlap;
                    kept += 1;
                    // The next live worker's slot is higher: this resident is passed.
                    j += 1;
                }
                _ => {
                    overlap.add_n(fastest_tier(tiers_of(live)), pending);
                    if let Some(worker) = workers.id(slot) {
                        done.push((worker, overlap));
                    }
                }
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

    /// Add the workers whose prefix went to the end to `done`, which then holds every worker
    /// with a non-empty prefix, and its overlap.
    pub(super) fn finish(mut self, workers: &WorkerTable, done: &mut Answer) {
        self.flush();
        for (resident, overlap) in self.alive.iter().zip(&self.counts) {
            if let Some(worker) = workers.id(slot_of(*resident)) {
                done.push((worker, *overlap));
            }
        }
        if self.alive.spilled() {
            SPARE.set(Spare {
                alive: self.alive.into_vec(),
                counts: self.counts.into_vec(),
            });
        }
    }
}
