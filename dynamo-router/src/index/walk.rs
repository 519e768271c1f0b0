//! The state of a query's walk down a request's blocks across segments and runs.
//!
//! A walk starts with the residents of the request's first segment and, at each next segment,
//! drops the workers that segment's residents lack, each finishing at the depth walked so far.
//! When every worker of the first segment has a slot below 64 (a router's usual pool), the live
//! workers are the bits of one word ([`BitWalk`]); otherwise they are a sorted list merged with
//! each segment's residents ([`MergeWalk`]). Both give the same answer: the workers in the order
//! their prefixes end, those that end at one segment in slot order, then the ones still live at
//! the end in slot order.

use dynamo_core::StorageTier;
use smallvec::SmallVec;

use super::merge::MergeWalk;
use super::overlap::{Answer, TierOverlap};
use super::residents::{Resident, fastest_tier, slot_of, tier_bit, tiers_of};
use super::workers::WorkerTable;

/// The device tier's bit in a resident's tier mask (the fastest tier, when it is set).
pub(super) const DEVICE: u8 = tier_bit(StorageTier::Device);

/// Slots a [`BitWalk`] follows: the bits of a `u64`.
const WORD_SLOTS: u32 = u64::BITS;

/// One walk, by bits or by merges (chosen at its start, by the first segment's largest slot).
pub(super) enum Walk {
    Bits(BitWalk),
    Merge(MergeWalk),
}

impl Walk {
    /// A walk whose first `blocks` blocks are held by `first` (not empty), its answer the empty
    /// `done`.
    pub(super) fn start(first: &[Resident], blocks: u32, done: &mut Answer) -> Self {
        // Sorted by slot: the last resident has the largest.
        if first.last().is_some_and(|&last| slot_of(last) < WORD_SLOTS) {
            Walk::Bits(BitWalk::start(first, blocks, done))
        } else {
            Walk::Merge(MergeWalk::start(first, blocks, done))
        }
    }

    /// Go `blocks` blocks further, all held by `residents`, the workers whose prefix ends going
    /// into `done`; `false` when no worker's prefix goes on.
    #[inline]
    pub(super) fn step(
        &mut self,
        residents: &[Resident],
        blocks: u32,
        workers: &WorkerTable,
        done: &mut Answer,
    ) -> bool {
        match self {
            Walk::Bits(walk) => walk.step(residents, blocks, workers, done),
            Walk::Merge(walk) => walk.step(residents, blocks, workers, done),
        }
    }

    /// Add the workers whose prefix went to the end to `done`, which then holds every worker
    /// with a non-empty prefix, and its overlap.
    pub(super) fn finish(self, workers: &WorkerTable, done: &mut Answer) {
        match self {
            Walk::Bits(walk) => walk.finish(workers, done),
            Walk::Merge(walk) => walk.finish(workers, done),
        }
    }
}

/// A walk whose workers all have slots below 64: the live workers are the bits of a word.
///
/// Every live worker holds every block walked so far, so one count serves them all: a worker
/// that a segment lacks ends at that count. A segment costs a pass over its residents that sets
/// their bits, and one bit operation drops the workers it lacks (where a merge compares each
/// live worker with the residents, a branch on each). Blocks held in no device memory, rare,
/// are counted apart per worker, by their fastest tier; the rest of a worker's prefix is device
/// blocks.
pub(super) struct BitWalk {
    /// The slots of the workers whose prefix is still going.
    alive: u64,
    /// Blocks walked, all held by every live worker.
    walked: u32,
    /// The slots that have an entry in `slower`.
    slow: u64,
    /// Per slot, the blocks of its prefix held in host memory, on disk or remotely only.
    slower: SmallVec<[(u32, TierOverlap); 2]>,
}

/// The bits of the residents' slots (those below 64), and of those among them that do not hold
/// the block in device memory.
#[inline]
fn bits(residents: &[Resident]) -> (u64, u64) {
    let (mut all, mut slow) = (0u64, 0u64);
    for &resident in residents {
        // A slot past the word is no live worker's: a walk by bits starts below 64.
        let bit = 1u64.checked_shl(slot_of(resident)).unwrap_or(0);
        all |= bit;
        // All ones when the device bit is clear, else zero: no branch.
        slow |= bit & u64::from(tiers_of(resident) & DEVICE).wrapping_sub(1);
    }
    (all, slow)
}

impl BitWalk {
    fn start(first: &[Resident], blocks: u32, done: &mut Answer) -> Self {
        // Every worker of the answer holds the first block: room for them all at once.
        done.reserve(first.len());
        let (alive, slow) = bits(first);
        let mut walk = BitWalk {
            alive,
            walked: 0,
            slow: 0,
            slower: SmallVec::new(),
        };
        if slow != 0 {
            walk.count_slower(first, slow, blocks);
        }
        walk.walked = blocks;
        walk
    }

    #[inline]
    fn step(
        &mut self,
        residents: &[Resident],
        blocks: u32,
        workers: &WorkerTable,
        done: &mut Answer,
    ) -> bool {
        let (held, slow) = bits(residents);
        let ended = self.alive & !held;
        if ended != 0 {
            self.end(ended, workers, done);
            self.alive &= held;
        }
        let slow = slow & self.alive;
        if slow != 0 {
            self.count_slower(residents, slow, blocks);
        }
        self.walked += blocks;
        self.alive != 0
    }

    fn finish(self, workers: &WorkerTable, done: &mut Answer) {
        self.end(self.alive, workers, done);
    }

    /// Put the workers of the slots in `ended` into `done`, in slot order, each with the
    /// blocks walked so far.
    fn end(&self, mut ended: u64, workers: &WorkerTable, done: &mut Answer) {
        while ended != 0 {
            let slot = ended.trailing_zeros();
            ended &= ended - 1;
            if let Some(worker) = workers.id(slot) {
                done.push((worker, self.overlap(slot)));
            }
        }
    }

    /// The overlap of the live worker at `slot`: the blocks walked, split by tier.
    #[inline]
    fn overlap(&self, slot: u32) -> TierOverlap {
        let mut overlap = TierOverlap {
            device: self.walked,
            ..TierOverlap::default()
        };
        if self.slow >> slot & 1 != 0
            && let Some((_, slower)) = self.slower.iter().find(|(s, _)| *s == slot)
        {
            overlap = *slower;
            overlap.device = self.walked - (slower.host + slower.disk + slower.remote);
        }
        overlap
    }

    /// Count `blocks` blocks for each resident whose slot is in `slow`, in its fastest tier.
    #[cold]
    fn count_slower(&mut self, residents: &[Resident], slow: u64, blocks: u32) {
        for &resident in residents {
            let slot = slot_of(resident);
            if slot >= WORD_SLOTS || slow >> slot & 1 == 0 {
                continue;
            }
            let tier = fastest_tier(tiers_of(resident));
            if self.slow >> slot & 1 == 0 {
                self.slow |= 1 << slot;
                self.slower.push((slot, TierOverlap::default()));
            }
            if let Some((_, slower)) = self.slower.iter_mut().find(|(s, _)| *s == slot) {
                slower.add_n(tier, blocks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::WorkerId;

    use super::*;
    use crate::index::residents::pack;

    /// A walk by bits and one by merges over the same segments give the same answer, the
    /// same workers in the same order with the same overlap in every tier: random resident
    /// lists over slots 0..72 (so some walks straddle the word), mostly in device memory.
    #[test]
    fn a_walk_by_bits_answers_as_a_walk_by_merges() {
        let mut workers = WorkerTable::default();
        for id in 0..72 {
            workers
                .slot_or_insert(WorkerId::new(1000 + id))
                .expect("few workers");
        }
        let mut next = crate::test_rng::below_from(0x9E37_79B9_7F4A_7C15);
        let (mut by_bits, mut by_merges) = (0, 0);
        for _ in 0..4000 {
            // Segments whose residents mostly keep the previous ones, sometimes dropping or
            // adding some, their tiers mostly device alone.
            let top = [8, 64, 72][next(3) as usize];
            let mut slots: Vec<u32> = (0..top).filter(|_| next(3) != 0).collect();
            let mut segments = Vec::new();
            for _ in 0..1 + next(12) {
                if slots.is_empty() {
                    break;
                }
                let residents: Vec<Resident> = slots
                    .iter()
                    .map(|&slot| {
                        let tiers = match next(10) {
                            0 => 1 + next(15) as u8,
                            _ => DEVICE,
                        };
                        pack(slot, tiers)
                    })
                    .collect();
                segments.push((residents, 1 + next(5) as u32));
                slots.retain(|_| next(5) != 0);
                if next(4) == 0 {
                    slots.push(next(u64::from(top)) as u32);
                    slots.sort_unstable();
                    slots.dedup();
                }
            }
            let Some(((first, blocks), rest)) = segments.split_first() else {
                continue;
            };
            let (mut bits_answer, mut merge_answer) = (Answer::new(), Answer::new());
            let mut bits = Walk::start(first, *blocks, &mut bits_answer);
            let mut merge = Walk::Merge(MergeWalk::start(first, *blocks, &mut merge_answer));
            match bits {
                Walk::Bits(_) => by_bits += 1,
                Walk::Merge(_) => by_merges += 1,
            }
            for (residents, blocks) in rest {
                let going = bits.step(residents, *blocks, &workers, &mut bits_answer);
                let merging = merge.step(residents, *blocks, &workers, &mut merge_answer);
                assert_eq!(going, merging);
                if !going {
                    break;
                }
            }
            bits.finish(&workers, &mut bits_answer);
            merge.finish(&workers, &mut merge_answer);
            assert_eq!(bits_answer, merge_answer, "segments {segments:?}");
        }
        // Both kinds of walk were taken.
        assert!(by_bits > 1000 && by_merges > 500, "{by_bits} / {by_merges}");
    }
}
