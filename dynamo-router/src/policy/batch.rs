//! Costing all the workers of a decision together.
//!
//! Most workers of a decision hold none of the prompt (no cached or in-flight prefix), so a
//! cost policy's formula for them needs only their loads. Those are copied side by side
//! ([`Loads`]) and costed in one pass without a branch, which the compiler makes vector
//! instructions of; the few workers that hold some of the prompt are gathered into columns and
//! costed in a second such pass. The same copy says what the workers reported of their KV
//! capacities ([`Reported`]), so that a policy picks the formula's cheapest exact form once per
//! batch rather than scanning the workers again. The formulas are the policies' own, given what
//! they read of a worker ([`Seen`]).

use super::WorkerState;
use crate::index::TierOverlap;

/// Workers whose costs are computed together (their loads copied side by side on the stack).
pub(super) const BATCH: usize = 64;

/// Workers holding some of the prompt whose costs are computed together: a decision usually
/// has fewer, and their columns are set to zero first.
const GROUP: usize = 16;

/// What a cost reads of one worker.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) cached: TierOverlap,
    pub(super) in_flight: u32,
    pub(super) requests: u32,
    pub(super) prefill_tokens: u64,
    pub(super) decode_blocks: u64,
    /// The worker's KV capacity in blocks, 0 when it is not known.
    pub(super) capacity: u64,
}

impl Seen {
    #[inline(always)]
    pub(super) fn of(worker: &WorkerState) -> Self {
        Seen {
            cached: worker.cached,
            in_flight: worker.in_flight,
            requests: worker.load.active_requests,
            prefill_tokens: worker.load.active_prefill_tokens,
            decode_blocks: worker.load.active_decode_blocks,
            capacity: worker.load.kv_capacity_blocks.unwrap_or(0),
        }
    }

    /// [`WorkerState::decode_blocks_with`] a request of `blocks` full blocks.
    #[inline(always)]
    pub(super) fn decode_blocks_with(&self, blocks: u64) -> u64 {
        let shared = u64::from(self.in_flight).min(blocks);
        self.decode_blocks + (blocks - shared) + 1
    }
}

/// What the workers of a batch reported of their KV capacities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reported {
    /// None of them (`None` or 0 each).
    Nothing,
    /// Every one of them the same number of blocks (not 0).
    Same(u64),
    /// Different capacities, or some reported one and some did not.
    Mixed,
}

/// The loads of at most [`BATCH`] workers side by side, the places of those that hold some of
/// the prompt, and what they reported of their capacities.
pub(super) struct Loads {
    n: usize,
    requests: [u32; BATCH],
    prefill_tokens: [u64; BATCH],
    decode_blocks: [u64; BATCH],
    capacity: [u64; BATCH],
    holding: [u8; BATCH],
    holders: usize,
    reported: Reported,
}

impl Loads {
    /// The loads of the first [`BATCH`] of `workers`, in one pass.
    #[inline(always)]
    pub(super) fn of(workers: &[WorkerState]) -> Self {
        let n = workers.len().min(BATCH);
        let mut loads = Loads {
            n,
            requests: [0; BATCH],
            prefill_tokens: [0; BATCH],
            decode_blocks: [0; BATCH],
            capacity: [0; BATCH],
            holding: [0; BATCH],
            holders: 0,
            reported: Reported::Nothing,
        };
        // The holders are counted in a local, not in `loads`' field, and the capacities' range
        // is taken in a pass of its own: a count read back from memory at each worker (for
        // want of registers) put a store and a load in the copy's chain.
        let mut holders = 0usize;
        for (i, worker) in workers.iter().take(n).enumerate() {
            loads.requests[i] = worker.load.active_requests;
            loads.prefill_tokens[i] = worker.load.active_prefill_tokens;
            loads.decode_blocks[i] = worker.load.active_decode_blocks;
            loads.capacity[i] = worker.load.kv_capacity_blocks.unwrap_or(0);
            // Without a branch: written at the next place, which moves on if it holds some.
            loads.holding[holders % BATCH] = i as u8;
            let cached = &worker.cached;
            let some = worker.in_flight | cached.device | cached.host | cached.disk | cached.remote;
            holders += usize::from(some != 0);
        }
        loads.holders = holders;
        let capacities = &loads.capacity[..n];
        let lowest = capacities.iter().copied().fold(u64::MAX, u64::min);
        let highest = capacities.iter().copied().fold(0, u64::max);
        loads.reported = if highest == 0 {
            Reported::Nothing
        } else if lowest == highest {
            Reported::Same(highest)
        } else {
            Reported::Mixed
        };
        loads
    }

    /// What the workers reported of their capacities.
    pub(super) fn reported(&self) -> Reported {
        self.reported
    }

    /// Every worker's cost into `costs` (as long as the workers), as if it held none of the
    /// prompt: `bare` given its load alone.
    #[inline(always)]
    pub(super) fn each_bare(&self, costs: &mut [f64], bare: impl Fn(Seen) -> f64) {
        let n = self.n.min(costs.len());
        for (i, cost) in costs[..n].iter_mut().enumerate() {
            *cost = bare(Seen {
                cached: TierOverlap::default(),
                in_flight: 0,
                requests: self.requests[i],
                prefill_tokens: self.prefill_tokens[i],
                decode_blocks: self.decode_blocks[i],
                capacity: self.capacity[i],
            });
        }
    }

    /// The cost of each of `workers` (those [`of`](Self::of) was given) that holds some of
    /// the prompt into its place in `costs`: `full` of what it holds and its load, side by
    /// side.
    #[inline(always)]
    pub(super) fn each_holding(
        &self,
        workers: &[WorkerState],
        costs: &mut [f64],
        full: impl Fn(Seen) -> f64,
    ) {
        for group in self.holding[..self.holders.min(BATCH)].chunks(GROUP) {
            let mut some = Columns::new();
            for (j, &i) in group.iter().enumerate() {
                if let Some(worker) = workers.get(usize::from(i)) {
                    some.set(j, Seen::of(worker));
                }
            }
            let mut theirs = [0.0; GROUP];
            for (j, cost) in theirs.iter_mut().take(group.len()).enumerate() {
                *cost = full(some.get(j));
            }
            for (&i, &cost) in group.iter().zip(&theirs) {
                if let Some(slot) = costs.get_mut(usize::from(i)) {
                    *slot = cost;
                }
            }
        }
    }
}

/// A group of workers as columns.
struct Columns {
    device: [u32; GROUP],
    host: [u32; GROUP],
    disk: [u32; GROUP],
    remote: [u32; GROUP],
    in_flight: [u32; GROUP],
    requests: [u32; GROUP],
    prefill_tokens: [u64; GROUP],
    decode_blocks: [u64; GROUP],
    capacity: [u64; GROUP],
}

impl Columns {
    fn new() -> Self {
        Columns {
            device: [0; GROUP],
            host: [0; GROUP],
            disk: [0; GROUP],
            remote: [0; GROUP],
            in_flight: [0; GROUP],
            requests: [0; GROUP],
            prefill_tokens: [0; GROUP],
            decode_blocks: [0; GROUP],
            capacity: [0; GROUP],
        }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, seen: Seen) {
        self.device[i] = seen.cached.device;
        self.host[i] = seen.cached.host;
        self.disk[i] = seen.cached.disk;
        self.remote[i] = seen.cached.remote;
        self.in_flight[i] = seen.in_flight;
        self.requests[i] = seen.requests;
        self.prefill_tokens[i] = seen.prefill_tokens;
        self.decode_blocks[i] = seen.decode_blocks;
        self.capacity[i] = seen.capacity;
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Seen {
        Seen {
            cached: TierOverlap {
                device: self.device[i],
                host: self.host[i],
                disk: self.disk[i],
                remote: self.remote[i],
            },
            in_flight: self.in_flight[i],
            requests: self.requests[i],
            prefill_tokens: self.prefill_tokens[i],
            decode_blocks: self.decode_blocks[i],
            capacity: self.capacity[i],
        }
    }
}
