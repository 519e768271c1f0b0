//! The KV prefix index: which worker caches which blocks, fed by KV events.
//!
//! Sequence hashes already identify whole prefixes (equal hash, equal prefix), so the index
//! needs no tree: a hash map takes a block's sequence hash to its position in a run, an array
//! of sequence hashes kept in the order the blocks were stored, cut into segments whose
//! positions all have the same residents (the workers that hold them, each with its tiers).
//! A query finds the request's first block in the map, then compares the request's next hashes
//! with the run's next positions as plain arrays, taking each segment's residents once for its
//! whole stretch, and goes back to the map only where the run and the request part. It drops
//! each worker at its first missing block and stops as soon as no worker is left. That answer
//! is exact even when an engine evicts a parent before its children: a hole is a segment the
//! worker is not in, and ends the worker's prefix there.

mod blockmap;
mod error;
mod merge;
mod overlap;
mod query;
mod residents;
mod runs;
mod shared;
mod snapshot;
mod walk;
mod workers;

use std::sync::Arc;

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, ResyncRequest, SequenceHash, StorageTier,
    WorkerId,
};

pub use error::IndexError;
pub use overlap::{Overlaps, TierOverlap};
pub use shared::SharedIndex;
pub use snapshot::{IndexSnapshot, WorkerSnapshot};

use residents::tier_bit;
use runs::{Loc, Op, Runs, Touched};
use workers::WorkerTable;

/// Told when a worker's event ids skip ahead, meaning events were lost.
///
/// It is called with the index locked, so it must not block: hand the request on. A
/// [`ResyncRequest`] channel is one: its receiver publishes the requests to the workers
/// (`dynamo_transport::events::forward_resyncs`), and a worker answers with a
/// [`KvEventData::Snapshot`] of its cache ([`KvPublisher::snapshot`](dynamo_core::KvPublisher)),
/// which replaces what the index knew of it. A full channel drops the request; the next gap
/// asks again.
pub trait ResyncHook: Send + Sync + 'static {
    /// Events of `worker` from `expected` up to (not including) `received` were never seen.
    fn request_resync(&self, worker: WorkerId, expected: u64, received: u64);
}

impl ResyncHook for tokio::sync::mpsc::Sender<ResyncRequest> {
    fn request_resync(&self, worker: WorkerId, expected: u64, received: u64) {
        let _ = self.try_send(ResyncRequest {
            worker,
            expected,
            received,
        });
    }
}

use blockmap::BlockMap;

/// The tiers `slot` holds in `residents` (0: none).
fn tiers_in(residents: &[residents::Resident], slot: u32) -> u8 {
    residents
        .binary_search_by_key(&slot, |&r| residents::slot_of(r))
        .map_or(0, |i| residents::tiers_of(residents[i]))
}

/// The prefix index of one model's workers.
///
/// `KvIndex` is single-threaded and synchronous; [`SharedIndex`] shares one between the task
/// that applies events and the tasks that route.
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
/// use dynamo_router::KvIndex;
///
/// let block_size = BlockSize::new(4)?;
/// let hasher = BlockHasher::new(block_size);
/// let mut index = KvIndex::new(block_size);
///
/// // Worker 1 caches the first two blocks of a prompt.
/// let prompt: Vec<u32> = (0..12).collect();
/// let blocks = hasher.hash_blocks(&prompt[..8]);
/// index.apply(&KvEvent {
///     worker: WorkerId::new(1),
///     event_id: 0,
///     tier: StorageTier::Device,
///     data: KvEventData::Stored { parent: None, block_size, blocks },
/// })?;
///
/// // A request with the same 12-token prompt finds 2 of its 3 blocks there.
/// let overlaps = index.overlaps(&hasher.sequence_hashes(&prompt));
/// assert_eq!(overlaps.get(WorkerId::new(1)).device, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KvIndex {
    block_size: BlockSize,
    blocks: BlockMap,
    runs: Runs,
    workers: WorkerTable,
    resync: Option<Arc<dyn ResyncHook>>,
}

impl std::fmt::Debug for dyn ResyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResyncHook")
    }
}

impl KvIndex {
    /// An empty index for blocks of `block_size` tokens.
    pub fn new(block_size: BlockSize) -> Self {
        KvIndex {
            block_size,
            blocks: BlockMap::default(),
            runs: Runs::default(),
            workers: WorkerTable::default(),
            resync: None,
        }
    }

    /// Call `hook` whenever a worker's event ids skip ahead.
    pub fn with_resync_hook(mut self, hook: Arc<dyn ResyncHook>) -> Self {
        self.resync = Some(hook);
        self
    }

    /// The block size of the index.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// Apply one event.
    ///
    /// Event ids are checked per worker: an id that is not newer than the last one is rejected
    /// as [`IndexError::StaleEvent`]; an id that skips ahead is applied and reported to the
    /// resync hook. Id 0 after later ids means the worker restarted (its ids begin again and
    /// its cache is empty): what the index held for it is cleared, and the event applied.
    ///
    /// # Errors
    ///
    /// An [`IndexError`] saying what was not applied; the index stays consistent either way.
    pub fn apply(&mut self, event: &KvEvent) -> Result<(), IndexError> {
        let result = self.apply_checked(event);
        if let Err(error) = &result {
            metrics::counter!("dynamo_router_index_rejected_total", "reason" => error.name())
                .increment(1);
        }
        result
    }

    fn apply_checked(&mut self, event: &KvEvent) -> Result<(), IndexError> {
        let slot = self.workers.slot_or_insert(event.worker)?;
        let expected = self.workers.next_event_id(slot);
        if let Some(expected) = expected {
            if event.event_id == 0 && expected > 0 {
                // A worker that restarts numbers its events from 0 again, and its cache
                // starts empty: what the index knew of it is gone.
                metrics::counter!("dynamo_router_index_worker_restarts_total").increment(1);
                self.clear(slot, u8::MAX);
            } else if event.event_id < expected {
                return Err(IndexError::StaleEvent {
                    worker: event.worker,
                    last_applied: expected - 1,
                    received: event.event_id,
                });
            }
            if event.event_id > expected {
                metrics::counter!("dynamo_router_index_event_gaps_total").increment(1);
                if let Some(hook) = &self.resync {
                    hook.request_resync(event.worker, expected, event.event_id);
                }
            }
        }
        self.workers
            .set_next_event_id(slot, event.event_id.saturating_add(1));
        let tier = tier_bit(event.tier);
        match &event.data {
            KvEventData::Stored {
                parent,
                block_size,
                blocks,
            } => self.store(event.worker, slot, tier, *parent, *block_size, blocks),
            KvEventData::Removed { blocks } => self.remove(event.worker, slot, tier, blocks),
            KvEventData::Cleared => {
                self.clear(slot, tier);
                Ok(())
            }
            KvEventData::Snapshot { block_size, blocks } => {
                self.check_block_size(event.worker, *block_size)?;
                self.clear(slot, tier);
                self.insert_all(slot, tier, blocks.iter().map(|block| block.sequence));
                Ok(())
            }
            // Event kinds added to dynamo-core later carry nothing this index tracks yet.
            _ => Ok(()),
        }
    }

    fn store(
        &mut self,
        worker: WorkerId,
        slot: u32,
        tier: u8,
        parent: Option<SequenceHash>,
        block_size: BlockSize,
        blocks: &[HashedBlock],
    ) -> Result<(), IndexError> {
        self.check_block_size(worker, block_size)?;
        let mut after = None;
        if let Some(parent) = parent {
            let Some(at) = self.blocks.get(&self.runs, parent) else {
                return Err(IndexError::UnknownParent { worker, parent });
            };
            if tiers_in(self.runs.residents(at), slot) == 0 {
                return Err(IndexError::UnknownParent { worker, parent });
            }
            after = Some(at);
        }
        self.insert_after(after, slot, tier, blocks.iter().map(|block| block.sequence));
        Ok(())
    }

    fn check_block_size(&self, worker: WorkerId, block_size: BlockSize) -> Result<(), IndexError> {
        if block_size == self.block_size {
            return Ok(());
        }
        Err(IndexError::BlockSizeMismatch {
            worker,
            index: self.block_size,
            event: block_size,
        })
    }

    /// Add `tier` to `slot`'s residency of every block in `hashes`.
    ///
    /// Each block is placed after the previous one when the run there already names it (no
    /// probe), else found in the map, else placed at the next position of the previous block's
    /// run (its end, or a dead position with the same hash), else in a new run. Consecutive
    /// positions of one run are updated as one range.
    fn insert_all(
        &mut self,
        slot: u32,
        tier: u8,
        hashes: impl ExactSizeIterator<Item = SequenceHash>,
    ) {
        self.insert_after(None, slot, tier, hashes);
    }

    /// [`KvIndex::insert_all`], the first block placed as if it followed the block at `after`
    /// (its parent).
    fn insert_after(
        &mut self,
        after: Option<Loc>,
        slot: u32,
        tier: u8,
        hashes: impl ExactSizeIterator<Item = SequenceHash>,
    ) {
        let mut left = hashes.len();
        let mut cursor = after;
        let mut range: Option<(u32, u32, u32)> = None;
        let mut added = 0;
        for hash in hashes {
            left -= 1;
            let loc = self.place(cursor, hash, left);
            range = match range {
                Some((run, start, end)) if run == loc.run && end == loc.offset => {
                    Some((run, start, end + 1))
                }
                pending => {
                    if let Some((run, start, end)) = pending {
                        added += self
                            .runs
                            .update(&mut self.blocks, run, start, end, Op::Insert(slot, tier))
                            .residency;
                    }
                    Some((loc.run, loc.offset, loc.offset + 1))
                }
            };
            cursor = Some(loc);
        }
        if let Some((run, start, end)) = range {
            added += self
                .runs
                .update(&mut self.blocks, run, start, end, Op::Insert(slot, tier))
                .residency;
        }
        self.workers.add_blocks(slot, added);
    }

    /// Where `hash` sits, placing it if no worker holds it; `cursor` is where the block before
    /// it was placed, and `left` how many blocks follow it.
    fn place(&mut self, cursor: Option<Loc>, hash: SequenceHash, left: usize) -> Loc {
        let next = cursor.map(|c| Loc {
            run: c.run,
            offset: c.offset + 1,
        });
        if let Some(next) = next
            && self.runs.holds(next.run, next.offset, hash)
        {
            return next;
        }
        let room = match self.blocks.get_or_vacant(&self.runs, hash) {
            Ok(held) => return held,
            Err(room) => room,
        };
        let loc = match next {
            Some(next) if self.runs.names(next.run, next.offset, hash) => next,
            Some(next) if self.runs.ends_before(next.run, next.offset) => {
                self.runs.append(next.run, hash, left)
            }
            // A lone block (a snapshot replayed as events) shares a run with others.
            None if left == 0 => self.runs.open(hash),
            _ => self.runs.create(hash, left + 1),
        };
        room.insert(loc);
        loc
    }

    fn remove(
        &mut self,
        worker: WorkerId,
        slot: u32,
        tier: u8,
        blocks: &[SequenceHash],
    ) -> Result<(), IndexError> {
        let unknown = self.remove_all(slot, tier, blocks);
        if unknown > 0 {
            return Err(IndexError::UnknownRemoval { worker, unknown });
        }
        Ok(())
    }

    /// Remove `tier` from `slot`'s residency of every block in `blocks`; returns how many of
    /// them `slot` did not hold in `tier`.
    fn remove_all(&mut self, slot: u32, tier: u8, blocks: &[SequenceHash]) -> usize {
        let (mut removed, mut unknown, mut missing) = (0, 0, 0);
        let mut range: Option<(u32, u32, u32)> = None;
        let mut touched = Touched::new();
        let mut flush = |index: &mut Self, (run, start, end): (u32, u32, u32)| {
            let tally =
                index
                    .runs
                    .update(&mut index.blocks, run, start, end, Op::Remove(slot, tier));
            removed += tally.residency;
            unknown += tally.unchanged as usize;
            if !touched.contains(&run) {
                touched.push(run);
            }
        };
        let mut rest = blocks;
        while let Some((&hash, after)) = rest.split_first() {
            let Some(loc) = self.blocks.get(&self.runs, hash) else {
                missing += 1;
                rest = after;
                continue;
            };
            // An engine evicts a chain in the order it stored it: the blocks after the one found
            // are most often the next positions of its run, compared there as one array.
            let len = self.runs.live_stretch(loc, after);
            rest = &after[len as usize - 1..];
            range = match range {
                Some((run, start, end)) if run == loc.run && end == loc.offset => {
                    Some((run, start, end + len))
                }
                pending => {
                    if let Some(pending) = pending {
                        flush(self, pending);
                    }
                    Some((loc.run, loc.offset, loc.offset + len))
                }
            };
        }
        if let Some(pending) = range {
            flush(self, pending);
        }
        for run in touched {
            self.runs.tidy(&mut self.blocks, run);
        }
        self.workers.remove_blocks(slot, removed);
        self.shrink_when_sparse();
        unknown + missing
    }

    /// Give memory back after a wave of removals: when the map is less than a quarter full,
    /// shrink it to twice its length (so that the next shrink needs another halving).
    fn shrink_when_sparse(&mut self) {
        let capacity = self.blocks.capacity();
        if capacity > 1024 && self.blocks.len() < capacity / 4 {
            let len = self.blocks.len();
            self.blocks.shrink_to(&self.runs, len * 2);
        }
    }

    /// Drop `tier` bits of `slot` from every block.
    fn clear(&mut self, slot: u32, tier: u8) {
        let removed = self
            .runs
            .update_all(&mut self.blocks, Op::Remove(slot, tier))
            .residency;
        self.workers.remove_blocks(slot, removed);
        self.shrink_when_sparse();
    }

    /// Forget a worker: all its blocks in every tier, and its event-id history. Returns how many
    /// blocks it held.
    pub fn remove_worker(&mut self, worker: WorkerId) -> u64 {
        let Some(slot) = self.workers.slot(worker) else {
            return 0;
        };
        let held = self.workers.block_count(slot);
        self.clear(slot, u8::MAX);
        self.workers.release(slot);
        held
    }

    /// The tiers `slot` holds `hash` in, as a bit mask (0: none).
    fn tiers_of(&self, slot: u32, hash: SequenceHash) -> u8 {
        self.blocks
            .get(&self.runs, hash)
            .map_or(0, |loc| tiers_in(self.runs.residents(loc), slot))
    }

    /// Whether `worker` holds the block `hash` in `tier`.
    pub fn contains(&self, worker: WorkerId, hash: SequenceHash, tier: StorageTier) -> bool {
        self.workers
            .slot(worker)
            .is_some_and(|slot| self.tiers_of(slot, hash) & tier_bit(tier) != 0)
    }

    /// The workers the index knows, with the number of blocks each holds (in any tier).
    pub fn workers(&self) -> impl Iterator<Item = (WorkerId, u64)> + '_ {
        self.workers.iter()
    }

    /// The number of distinct blocks held by any worker.
    pub fn unique_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The number of (worker, block) pairs held, counting a block once per worker.
    pub fn resident_blocks(&self) -> u64 {
        self.workers.iter().map(|(_, blocks)| blocks).sum()
    }

    /// An estimate of the heap bytes the index holds.
    pub fn heap_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<Loc>() + 1;
        self.blocks.capacity() * bucket + self.runs.heap_bytes() + self.workers.heap_bytes()
    }
}
