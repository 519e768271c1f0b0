//! The workers' states for a decision, kept from one decision to the next.
//!
//! Between two decisions few loads change (the last booking, a few first tokens and releases),
//! and only the few workers the last request's prefix reached had a cached or in-flight prefix.
//! So the states are not rebuilt: the tracker keeps its latest changes, and a cache that saw
//! everything before them copies only the loads they changed; one that did not (more changes
//! since than the tracker keeps) compares each state's version with the tracker's and copies
//! those that differ. The prefixes set by the last decision are cleared before the next.

use dynamo_core::{SequenceHash, WorkerId};
use smallvec::SmallVec;

use super::{LoadTracker, WorkerLoad};
use crate::index::TierOverlap;
use crate::policy::WorkerState;

/// Every member's state for the decision being made, and what lets the next one reuse it.
#[derive(Debug, Default)]
pub(crate) struct StateCache {
    states: Vec<WorkerState>,
    /// The version of the load each state holds.
    seen: Vec<u64>,
    /// The states whose `cached` or `in_flight` the last decision set.
    marked: Vec<u32>,
    /// The tracker's version the loads are up to date with.
    version: u64,
    /// The state of each tracker slot, by slot ([`NO_STATE`] for slots of no member).
    state_of_slot: Vec<u32>,
}

/// The place in `state_of_slot` of a slot that is no member's.
const NO_STATE: u32 = u32::MAX;

impl StateCache {
    /// The states, sorted like the members they were made for.
    pub(crate) fn states(&self) -> &[WorkerState] {
        &self.states
    }

    /// The members changed: rebuild every state at the next snapshot.
    pub(crate) fn invalidate(&mut self) {
        self.states.clear();
        self.seen.clear();
        self.marked.clear();
        self.state_of_slot.clear();
    }

    /// Set the cached prefix of the state at `at` for this decision.
    pub(crate) fn set_cached(&mut self, at: usize, cached: TierOverlap) {
        if let Some(state) = self.states.get_mut(at) {
            state.cached = cached;
            self.marked.push(at as u32);
        }
    }

    /// Clear what the last decision set, keeping the loads.
    fn clear_marks(&mut self) {
        for at in self.marked.drain(..) {
            if let Some(state) = self.states.get_mut(at as usize) {
                state.cached = TierOverlap::default();
                state.in_flight = 0;
            }
        }
    }
}

impl LoadTracker {
    /// Bring `cache` up to date for `workers` (their books in the same places of `slots`): each
    /// worker's load, and how many leading blocks of `blocks` its active requests hold, under
    /// one lock. Cached prefixes are left at zero for the caller to set.
    pub(crate) fn snapshot(
        &self,
        workers: &[WorkerId],
        slots: &[u32],
        cache: &mut StateCache,
        blocks: &[SequenceHash],
    ) {
        let books = self.books.lock();
        let load_of = |slot: u32| {
            books
                .loads
                .get(slot as usize)
                .copied()
                .unwrap_or((0, WorkerLoad::default()))
        };
        let missed = cache.version.saturating_add(1);
        if cache.states.len() != workers.len() {
            cache.invalidate();
            for (at, (&worker, &slot)) in workers.iter().zip(slots).enumerate() {
                let (version, load) = load_of(slot);
                cache.states.push(WorkerState {
                    worker,
                    cached: TierOverlap::default(),
                    in_flight: 0,
                    load,
                });
                cache.seen.push(version);
                let slot = slot as usize;
                if cache.state_of_slot.len() <= slot {
                    cache.state_of_slot.resize(slot + 1, NO_STATE);
                }
                cache.state_of_slot[slot] = at as u32;
            }
        } else if books
            .changes
            .front()
            .is_some_and(|&(oldest, _)| oldest <= missed)
        {
            // Every change since the cache's version is in the list: copy only those loads.
            cache.clear_marks();
            let first = books
                .changes
                .partition_point(|&(version, _)| version < missed);
            for &(_, slot) in books.changes.range(first..) {
                let at = cache.state_of_slot.get(slot as usize).copied();
                if let Some(at) = at.filter(|&at| at != NO_STATE).map(|at| at as usize)
                    && let (Some(state), Some(seen)) =
                        (cache.states.get_mut(at), cache.seen.get_mut(at))
                {
                    (*seen, state.load) = load_of(slot);
                }
            }
        } else {
            cache.clear_marks();
            for ((state, seen), &slot) in cache.states.iter_mut().zip(&mut cache.seen).zip(slots) {
                let (version, load) = load_of(slot);
                if version != *seen {
                    *seen = version;
                    state.load = load;
                }
            }
        }
        cache.version = books.next_version;
        let Some(first) = blocks.first() else {
            return;
        };
        // Only workers with an active chain that starts like the request hold any of it.
        let mut sharing: SmallVec<[u32; 8]> = books
            .heads
            .iter()
            .filter(|head| head.first == *first)
            .map(|head| head.slot)
            .collect();
        sharing.sort_unstable();
        sharing.dedup();
        for slot in sharing {
            // The member's state by its slot, in one look-up (a slot of no member has none).
            let at = cache.state_of_slot.get(slot as usize).copied();
            let (Some(at), Some(Some((_, book)))) = (
                at.filter(|&at| at != NO_STATE),
                books.books.get(slot as usize),
            ) else {
                continue;
            };
            if let Some(state) = cache.states.get_mut(at as usize) {
                state.in_flight = book.held_prefix(blocks) as u32;
                cache.marked.push(at);
            }
        }
    }
}
