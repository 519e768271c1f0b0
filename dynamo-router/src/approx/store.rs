//! The predictions: one map from a block to the workers predicted to hold it, each with its
//! latest touch, and each worker's requests in routing order.
//!
//! Recording a request is one map update per block (the worker's touch number set, or the
//! worker added); the request itself is one record. A block's only holder is kept inline and
//! forgotten lazily: it is dead once its touch leaves the worker's queue, which the map reads
//! from the workers' [`Span`]s. Forgetting a listed holder's touch checks, in the same map
//! entry, that it is still the worker's latest touch of the block; if so the worker leaves the
//! block, and the entry goes with its last worker. A query looks each block up until no worker
//! is left, comparing holders only where they change.

use std::collections::HashMap;
use std::time::Instant;

use dynamo_core::{SequenceHash, WorkerId};
use smallvec::SmallVec;

use super::holders::{Blocks, Holder, Touched, short};
use super::records::{Kind, Records, Span, Touch};
use crate::index::{IndexError, Overlaps, TierOverlap};

/// The most workers the predictions track (as many as the event-fed index).
const MAX_WORKERS: usize = 1 << 24;

/// Touches after which dead holders are swept even if the table has room: a touch number is
/// compared modulo 2^32, so a dead holder must go before its worker's numbers come round.
const SWEEP_TOUCHES: u64 = 1 << 30;

#[derive(Debug)]
struct Worker {
    id: WorkerId,
    records: Records,
    /// Blocks the worker is predicted to hold.
    blocks: usize,
}

/// Every worker's predictions.
#[derive(Debug)]
pub(super) struct Store {
    blocks: Blocks,
    workers: Vec<Option<Worker>>,
    /// Each slot's touch numbers in its queue (empty for a free slot, whose numbering a new
    /// worker continues): an inline holder outside its slot's span is dead.
    spans: Vec<Span>,
    /// Touches recorded since the dead holders were last swept.
    since_sweep: u64,
    slot_of: HashMap<WorkerId, u32, foldhash::fast::RandomState>,
    free: Vec<u32>,
    /// Stale touches a worker may carry beyond its live blocks before its records are compacted.
    slack: usize,
    /// Touches being forgotten (a buffer kept between expiries).
    popped: Vec<Touch>,
}

impl Store {
    pub(super) fn new(slack: usize) -> Self {
        Store {
            blocks: Blocks::default(),
            workers: Vec::new(),
            spans: Vec::new(),
            since_sweep: 0,
            slot_of: HashMap::default(),
            free: Vec::new(),
            slack,
            popped: Vec::new(),
        }
    }

    fn slot_or_insert(&mut self, worker: WorkerId) -> Result<u32, IndexError> {
        if let Some(&slot) = self.slot_of.get(&worker) {
            return Ok(slot);
        }
        let worker_with = |front: u32| Worker {
            id: worker,
            records: Records::starting_at(u64::from(front)),
            blocks: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                // The slot's numbering goes on: its dead holders stay dead.
                let front = self.spans.get(slot as usize).map_or(0, |span| span.front);
                self.workers[slot as usize] = Some(worker_with(front));
                slot
            }
            None if self.workers.len() < MAX_WORKERS => {
                self.workers.push(Some(worker_with(0)));
                self.spans.push(Span::default());
                (self.workers.len() - 1) as u32
            }
            None => {
                return Err(IndexError::TooManyWorkers {
                    max: MAX_WORKERS as u32,
                });
            }
        };
        self.slot_of.insert(worker, slot);
        Ok(slot)
    }

    /// Record that `worker` was sent `hashes` at `at`, the last the most recent; then drop its
    /// least recently routed blocks beyond `capacity`.
    pub(super) fn record(
        &mut self,
        worker: WorkerId,
        hashes: &[SequenceHash],
        at: Instant,
        capacity: Option<usize>,
    ) -> Result<(), IndexError> {
        let slot = self.slot_or_insert(worker)?;
        let Some(state) = self.workers[slot as usize].as_mut() else {
            return Ok(());
        };
        let first = state.records.next_touch();
        // Most of the blocks are new to the map and far apart in it: their places are read in
        // one pass first, so that the misses overlap rather than come one per touch.
        self.blocks.read_ahead(hashes.iter().copied());
        // Queued first, so that a block the request holds twice marks its first touch stale.
        state.records.push(hashes, at);
        self.spans[slot as usize] = state.records.span();
        self.since_sweep += hashes.len() as u64;
        if self.since_sweep > SWEEP_TOUCHES {
            self.since_sweep = 0;
            self.blocks.sweep(&self.spans);
        }
        self.blocks.reserve(hashes.len(), &self.spans);
        let workers = &mut self.workers;
        for (touch, &hash) in (first..).zip(hashes) {
            let touch = short(touch);
            let touched = self.blocks.touch(hash, Holder { slot, touch }, &self.spans);
            if let Touched::Listed { moved: Some(moved) } = touched {
                // The block's earlier only holder is listed now: forgotten by a look-up.
                if let Some(other) = workers
                    .get_mut(moved.slot as usize)
                    .and_then(Option::as_mut)
                {
                    other.records.mark_listed(moved.touch);
                }
            }
            let Some(state) = workers.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            match touched {
                Touched::Added => state.blocks += 1,
                Touched::Listed { .. } => {
                    state.blocks += 1;
                    state.records.mark_listed(touch);
                }
                Touched::Again { earlier, listed } => {
                    // The worker's earlier touch of the block will be skipped without a
                    // look-up.
                    state.records.mark_stale(earlier);
                    if listed {
                        state.records.mark_listed(touch);
                    }
                }
            }
        }
        let Some(state) = self.workers[slot as usize].as_mut() else {
            return Ok(());
        };
        if state.records.len() > 2 * state.blocks + self.slack {
            let blocks = &mut self.blocks;
            state.records.compact(|(hash, number), renumbered| {
                match blocks.holder_mut(&hash, slot) {
                    Some(holder) if holder.touch == short(number) => {
                        holder.touch = short(renumbered);
                        true
                    }
                    _ => false,
                }
            });
            self.spans[slot as usize] = state.records.span();
        }
        if let Some(capacity) = capacity {
            while self.held_by(slot) > capacity {
                if !self.pop_front(slot) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn held_by(&self, slot: u32) -> usize {
        self.workers
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map_or(0, |w| w.blocks)
    }

    /// Pop the front touch of `slot`, forgetting its block if it was the latest touch.
    /// `false` when there is none.
    fn pop_front(&mut self, slot: u32) -> bool {
        let Some(state) = self.workers.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        let Some((touch, kind)) = state.records.pop() else {
            return false;
        };
        self.spans[slot as usize] = state.records.span();
        match kind {
            // Dead now that its touch has left the queue.
            Kind::Inline => state.blocks -= 1,
            Kind::Listed => {
                if forget(&mut self.blocks, touch, slot) {
                    state.blocks -= 1;
                }
            }
            Kind::Stale => {}
        }
        true
    }

    /// Forget, for every worker, the blocks whose latest touch was routed at a time `expired`
    /// says so of, least recent first, stopping at each worker's first live touch that is not.
    pub(super) fn expire(&mut self, expired: impl Fn(Instant) -> bool) {
        let mut popped = std::mem::take(&mut self.popped);
        for slot in 0..self.workers.len() as u32 {
            let Some(state) = self.workers[slot as usize].as_mut() else {
                continue;
            };
            // Whole requests that expired, and stale touches, up to the first live touch that
            // did not expire. Touches marked stale are no longer their blocks' latest, and
            // inline ones are dead once they leave the queue, so neither is looked up.
            loop {
                if let Some(inline) = state.records.pop_record_if(&expired, &mut popped) {
                    state.blocks -= inline;
                    self.blocks.read_ahead(popped.iter().map(|&(hash, _)| hash));
                    for touch in popped.drain(..) {
                        if forget(&mut self.blocks, touch, slot) {
                            state.blocks -= 1;
                        }
                    }
                } else if state.records.front_is_stale() == Some(true) {
                    state.records.pop();
                } else {
                    break;
                }
            }
            self.spans[slot as usize] = state.records.span();
        }
        self.popped = popped;
    }

    /// Forget every prediction about `worker`.
    pub(super) fn remove_worker(&mut self, worker: WorkerId) {
        let Some(slot) = self.slot_of.remove(&worker) else {
            return;
        };
        if let Some(state) = self.workers[slot as usize].take() {
            for touch in state.records.iter() {
                forget(&mut self.blocks, touch, slot);
            }
            // Empty: the slot's holders left in the map are dead; a new worker in the slot
            // numbers its touches on from here.
            self.spans[slot as usize] = Span {
                front: short(state.records.next_touch()),
                len: 0,
            };
        }
        self.free.push(slot);
    }

    /// How deep each worker's predicted prefix of `hashes` goes, added to `answer` (empty).
    pub(super) fn overlaps(&self, hashes: &[SequenceHash], answer: &mut Overlaps) {
        let Some(first) = hashes.first() else {
            return;
        };
        // The query stops at the first block nobody holds, but the selector usually records
        // the same blocks next: reading all their places now overlaps the misses of the
        // record's new blocks with each other and with the policy's work.
        self.blocks.read_ahead(hashes.iter().copied());
        if self.workers.len() <= 64 {
            if let Some(mask) = self
                .blocks
                .mask(first, &self.spans)
                .filter(|&mask| mask != 0)
            {
                self.overlaps_masked(mask, &hashes[1..], answer);
            }
        } else if let Some(holders) = self
            .blocks
            .holders(first, &self.spans)
            .filter(|holders| !holders.is_empty())
        {
            self.overlaps_merged(holders, &hashes[1..], answer);
        }
    }

    /// [`overlaps`](Self::overlaps) when every slot is below 64: the workers still going are
    /// a bit mask, intersected with each block's.
    fn overlaps_masked(&self, first: u64, rest: &[SequenceHash], answer: &mut Overlaps) {
        // One allocation at most, none if the buffer held as many before: the answer never
        // lists more workers than hold the first block.
        answer.workers.reserve(first.count_ones() as usize);
        let mut alive = first;
        let mut depth = 1;
        let end = |gone: u64, depth: u32, answer: &mut Overlaps| {
            let mut gone = gone;
            while gone != 0 {
                let slot = gone.trailing_zeros();
                gone &= gone - 1;
                if let Some(entry) = self.entry(slot, depth) {
                    answer.workers.push(entry);
                }
            }
        };
        for hash in rest {
            let Some(mask) = self.blocks.mask(hash, &self.spans) else {
                break;
            };
            let kept = alive & mask;
            if kept != alive {
                end(alive & !kept, depth, answer);
                alive = kept;
                if alive == 0 {
                    return;
                }
            }
            depth += 1;
        }
        end(alive, depth, answer);
    }

    /// [`overlaps`](Self::overlaps) for any slots: sorted lists, merged where they differ.
    fn overlaps_merged(&self, first: &[Holder], rest: &[SequenceHash], answer: &mut Overlaps) {
        // The workers holding every block so far, sorted by slot.
        let mut alive: SmallVec<[u32; 8]> = first.iter().map(|h| h.slot).collect();
        answer.workers.reserve(alive.len());
        let mut depth = 1;
        for hash in rest {
            let Some(holders) = self.blocks.holders(hash, &self.spans) else {
                break;
            };
            let same = holders.len() == alive.len()
                && holders.iter().zip(&alive).all(|(h, &slot)| h.slot == slot);
            if !same {
                let mut j = 0;
                alive.retain(|slot| {
                    while j < holders.len() && holders[j].slot < *slot {
                        j += 1;
                    }
                    let kept = j < holders.len() && holders[j].slot == *slot;
                    if !kept {
                        answer.workers.extend(self.entry(*slot, depth));
                    }
                    kept
                });
                if alive.is_empty() {
                    return;
                }
            }
            depth += 1;
        }
        for &slot in &alive {
            answer.workers.extend(self.entry(slot, depth));
        }
    }

    /// The answer's entry for `slot`: its worker and a prefix of `depth` device blocks.
    fn entry(&self, slot: u32, depth: u32) -> Option<(WorkerId, TierOverlap)> {
        let worker = self.workers.get(slot as usize)?.as_ref()?;
        let overlap = TierOverlap {
            device: depth,
            ..TierOverlap::default()
        };
        Some((worker.id, overlap))
    }

    /// Every worker's predicted blocks, least recently routed first.
    pub(super) fn export(&self) -> Vec<(WorkerId, Vec<SequenceHash>)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(slot, state)| {
                let state = state.as_ref()?;
                let live = state
                    .records
                    .iter()
                    .filter(|&touch| is_latest(&self.blocks, touch, slot as u32))
                    .map(|(hash, _)| hash)
                    .collect();
                Some((state.id, live))
            })
            .collect()
    }

    /// The number of (worker, block) predictions held.
    pub(super) fn predicted_blocks(&self) -> u64 {
        self.workers.iter().flatten().map(|w| w.blocks as u64).sum()
    }

    /// Take the dead holders off the map now (for tests: the store does it every 2^30
    /// touches).
    #[cfg(test)]
    pub(super) fn sweep(&mut self) {
        self.blocks.sweep(&self.spans);
    }

    /// The touches `worker` carries and its live blocks (for tests).
    #[cfg(test)]
    pub(super) fn touches(&self, worker: WorkerId) -> (usize, usize) {
        self.slot_of
            .get(&worker)
            .and_then(|&slot| self.workers[slot as usize].as_ref())
            .map_or((0, 0), |w| (w.records.len(), w.blocks))
    }
}

/// Whether `touch` is `slot`'s latest touch of its block.
fn is_latest(blocks: &Blocks, (hash, number): Touch, slot: u32) -> bool {
    blocks.is_latest(&hash, slot, short(number))
}

/// If `touch` is `slot`'s latest touch of its block, take `slot` off the block (and the block
/// off the map with its last holder); whether it was.
fn forget(blocks: &mut Blocks, (hash, number): Touch, slot: u32) -> bool {
    blocks.forget(hash, slot, short(number))
}
