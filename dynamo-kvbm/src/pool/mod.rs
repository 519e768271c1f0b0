//! [`BlockPool`]: which of a fixed set of KV blocks holds what, with prefix reuse.
//!
//! A block is *free*, *private* or *registered*. A sequence takes private blocks
//! ([`BlockPool::take`]) and fills them; a full block is registered under its sequence hash
//! ([`BlockPool::register`]) and from then on can be shared: a new sequence whose prompt starts
//! with registered blocks pins them ([`BlockPool::pin`]) instead of computing them. A registered
//! block nobody pins stays cached and evictable, least recently released first; taking a block
//! uses a free one if any is left, else evicts. Registering emits `Stored`, evicting emits
//! `Removed`.
//!
//! The handles ([`PrivateBlock`], [`PinnedBlock`]) are neither `Clone` nor `Copy`: giving one
//! back to the pool consumes it, so a sequence cannot use a block after returning it. Dropping
//! a handle without giving it back leaks the block (it stays in use), hence `#[must_use]`.

mod slot_table;

use std::collections::VecDeque;

use dynamo_core::{BlockSize, HashedBlock, KvEventData, LocalBlockHash, SequenceHash};

use slot_table::SlotTable;

use crate::changes::{record_removed, record_stored};

/// A block's place in the pool: `0..capacity`, the index of its bytes in the engine's store.
pub type BlockId = u32;

/// A private block: taken from the pool, being filled, not shared.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a block not given back to its pool stays in use"]
pub struct PrivateBlock(BlockId);

/// A registered block pinned by its holder: shared, and not evictable while pinned.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a block not given back to its pool stays in use"]
pub struct PinnedBlock(BlockId);

/// A registered block that was evicted, for the tier below (recorded with
/// [`BlockPool::track_evictions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Where its bytes still are, until the block is written again.
    pub id: BlockId,
    /// Its hashes.
    pub block: HashedBlock,
    /// The block before it in its sequence.
    pub parent: Option<SequenceHash>,
}

/// The release stamp of a block that is not evictable: no queue entry carries it.
const HELD: u64 = 0;

/// One block's state.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// The sequence hash it is registered under (meaningful when `registered`).
    hash: SequenceHash,
    /// When the block was last released ([`HELD`] unless it is registered and evictable).
    released: u64,
    /// Holders: pins of a registered block; 1 for a private block; 0 when free or evictable.
    pins: u32,
    registered: bool,
}

/// A released block's entry in the eviction queue.
#[derive(Debug, Clone, Copy)]
struct Released {
    id: BlockId,
    /// The block's release stamp when it was queued; the entry is stale once they differ.
    stamp: u64,
    /// The block's hash, so that a batch of evictions can warm the table without reading the
    /// block first.
    hash: SequenceHash,
}

/// Read every value at once and discard them: the cache misses overlap instead of each waiting
/// for the one before, and the work that follows finds the lines in cache.
fn warm(values: impl Iterator<Item = u64>) {
    std::hint::black_box(values.fold(0, |all, value| all ^ value));
}

/// The pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounters {
    /// All blocks.
    pub capacity: usize,
    /// Blocks some sequence holds (private or pinned).
    pub in_use: usize,
    /// Registered blocks nobody pins (reusable until evicted).
    pub cached: usize,
    /// Blocks holding nothing.
    pub free: usize,
}

/// The bookkeeping of a fixed number of KV blocks: allocation, prefix reuse, least recently
/// released eviction and KV events. It holds no bytes: a block's [`BlockId`] says where the
/// engine keeps them.
///
/// Eviction order is a queue of `(block, release stamp)` in release order. Pinning a block does
/// not touch the queue: its entry goes stale (the block's stamp no longer matches) and is
/// skipped when it reaches the front. Only registering, evicting and looking up a prefix hash.
///
/// # Example
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize};
/// use dynamo_kvbm::BlockPool;
///
/// let block_size = BlockSize::new(4)?;
/// let mut pool = BlockPool::new(8, block_size);
/// let prompt = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
///
/// // A first sequence computes both blocks and registers them as they fill.
/// let mut private = Vec::new();
/// assert!(pool.take(2, &mut private));
/// let mut held = Vec::new();
/// let mut parent = None;
/// for (block, hashed) in private.into_iter().zip(&prompt) {
///     held.push(pool.register(block, parent, *hashed));
///     parent = Some(hashed.sequence);
/// }
/// pool.release(&mut held);
///
/// // A second sequence with the same prompt finds both blocks cached and pins them.
/// let mut found = Vec::new();
/// pool.cached_prefix(&prompt, &mut found);
/// assert_eq!(found.len(), 2);
/// let mut pinned: Vec<_> = found.into_iter().filter_map(|id| pool.pin(id)).collect();
/// assert_eq!(pool.counters().in_use, 2);
/// pool.release(&mut pinned);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockPool {
    block_size: BlockSize,
    capacity: u32,
    /// The blocks used so far: ids at and past its length are free and never used, so a pool
    /// sized far beyond what a run fills costs only what it fills.
    blocks: Vec<Block>,
    /// Used blocks holding nothing, taken last-freed first.
    free: Vec<BlockId>,
    /// Registered blocks by hash.
    registered: SlotTable,
    /// Released blocks, least recently released first; entries whose stamp is stale are
    /// skipped.
    released: VecDeque<Released>,
    next_stamp: u64,
    evictable: usize,
    /// Whether cache changes are recorded in `events`.
    record_events: bool,
    /// Cache changes not yet reported, in order.
    events: Vec<KvEventData>,
    /// Each registered block's local hash and parent, kept only while evictions are tracked.
    lineage: Vec<(LocalBlockHash, Option<SequenceHash>)>,
    /// Evictions not yet taken, when tracked.
    evicted: Option<Vec<Evicted>>,
}

impl BlockPool {
    /// A pool of `capacity` free blocks.
    pub fn new(capacity: u32, block_size: BlockSize) -> Self {
        let expected = (capacity as usize).min(1 << 20);
        BlockPool {
            block_size,
            capacity,
            blocks: Vec::with_capacity(expected),
            free: Vec::new(),
            registered: SlotTable::with_capacity(expected),
            released: VecDeque::new(),
            next_stamp: HELD + 1,
            evictable: 0,
            record_events: true,
            events: Vec::new(),
            lineage: Vec::new(),
            evicted: None,
        }
    }

    /// Record cache changes as KV events (on by default).
    pub fn record_events(&mut self, record: bool) {
        self.record_events = record;
    }

    /// Record every evicted registered block, with its hashes and parent, for
    /// [`take_evicted`](Self::take_evicted): what a tier below needs to keep it (off by default).
    pub fn track_evictions(&mut self, track: bool) {
        if track {
            self.evicted = Some(Vec::new());
        } else {
            self.lineage = Vec::new();
            self.evicted = None;
        }
    }

    /// The tokens per block.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// All blocks.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Blocks held by sequences (private or pinned).
    pub fn in_use(&self) -> usize {
        self.blocks.len() - self.free.len() - self.evictable
    }

    /// Blocks holding nothing.
    fn free_blocks(&self) -> usize {
        self.capacity() - self.blocks.len() + self.free.len()
    }

    /// Blocks [`take`](Self::take) can still hand out (free or evictable).
    pub fn obtainable(&self) -> usize {
        self.free_blocks() + self.evictable
    }

    /// The counters now.
    pub fn counters(&self) -> PoolCounters {
        PoolCounters {
            capacity: self.capacity(),
            in_use: self.in_use(),
            cached: self.evictable,
            free: self.free_blocks(),
        }
    }

    /// Whether the pool holds a registered block of `hash`.
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.lookup(hash).is_some()
    }

    fn lookup(&self, hash: SequenceHash) -> Option<BlockId> {
        let blocks = &self.blocks;
        self.registered.get(hash, |id| blocks[id as usize].hash)
    }

    /// The ids of the leading blocks of `hashes` that are registered, appended to `found`.
    /// They stay valid until the next eviction; [`pin`](Self::pin) them to keep them.
    pub fn cached_prefix(&self, hashes: &[HashedBlock], found: &mut Vec<BlockId>) {
        // Look ahead in batches that double while blocks are found, warming each batch first:
        // a prefix that ends early costs little, and a long one costs overlapping misses.
        let (mut start, mut batch) = (0, 4);
        while start < hashes.len() {
            let chunk = &hashes[start..(start + batch).min(hashes.len())];
            self.warm_registrations(chunk);
            for block in chunk {
                match self.lookup(block.sequence) {
                    Some(id) => found.push(id),
                    None => return,
                }
            }
            start += chunk.len();
            batch = (batch * 2).min(64);
        }
    }

    /// Pin the registered block `id`; `None` if it is not registered (it was evicted since it
    /// was found, or never was).
    pub fn pin(&mut self, id: BlockId) -> Option<PinnedBlock> {
        let block = self.blocks.get_mut(id as usize)?;
        if !block.registered {
            return None;
        }
        if block.pins == 0 {
            block.released = HELD;
            self.evictable -= 1;
        }
        block.pins += 1;
        Some(PinnedBlock(id))
    }

    /// Give back every block in `blocks`, the last first (so that a sequence's tail is evicted
    /// before its head), leaving `blocks` empty for reuse: a pinned block with no pin left
    /// becomes the most recently released evictable one, a private one becomes free.
    pub fn release<B: Held>(&mut self, blocks: &mut Vec<B>) {
        warm(
            blocks
                .iter()
                .map(|block| self.blocks[block.id() as usize].released),
        );
        for block in blocks.drain(..).rev() {
            self.release_one(block.id());
        }
    }

    fn release_one(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        if block.pins == 0 {
            return;
        }
        block.pins -= 1;
        if block.pins > 0 {
            return;
        }
        if !block.registered {
            self.free.push(id);
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        block.released = stamp;
        let hash = block.hash;
        self.released.push_back(Released { id, stamp, hash });
        self.evictable += 1;
        self.compact_if_stale();
    }

    /// Drop stale queue entries once they outnumber the live ones, so the queue stays
    /// proportional to the pool.
    fn compact_if_stale(&mut self) {
        if self.released.len() > 2 * self.evictable + 1024 {
            let blocks = &self.blocks;
            self.released
                .retain(|entry| blocks[entry.id as usize].released == entry.stamp);
        }
    }

    /// Bring into cache what registering or looking up `blocks` reads first.
    pub fn warm_registrations(&self, blocks: &[HashedBlock]) {
        warm(
            blocks
                .iter()
                .map(|block| self.registered.touch(block.sequence)),
        );
    }

    /// Take `n` private blocks into `into`, free ones first, then evicting; `false` (and
    /// nothing taken) when fewer than `n` can be had.
    pub fn take(&mut self, n: usize, into: &mut Vec<PrivateBlock>) -> bool {
        if self.obtainable() < n {
            return false;
        }
        let from_free = n.min(self.free_blocks());
        let evictions = n - from_free;
        if evictions > 1 {
            let next = self.released.iter().take(evictions);
            warm(next.map(|entry| {
                self.blocks[entry.id as usize].released ^ self.registered.touch(entry.hash)
            }));
        }
        for _ in 0..from_free {
            let id = match self.free.pop() {
                Some(id) => id,
                None => {
                    // Below the capacity, so the id fits.
                    let id = self.blocks.len() as BlockId;
                    self.blocks.push(Block {
                        hash: SequenceHash(0),
                        released: HELD,
                        pins: 0,
                        registered: false,
                    });
                    id
                }
            };
            self.blocks[id as usize].pins = 1;
            into.push(PrivateBlock(id));
        }
        for _ in 0..evictions {
            if let Some(id) = self.evict_oldest() {
                let block = &mut self.blocks[id as usize];
                block.registered = false;
                block.pins = 1;
                into.push(PrivateBlock(id));
            }
        }
        true
    }

    /// Unregister the least recently released evictable block; its id.
    fn evict_oldest(&mut self) -> Option<BlockId> {
        while let Some(Released { id, stamp, hash }) = self.released.pop_front() {
            let block = &mut self.blocks[id as usize];
            if block.released != stamp {
                continue;
            }
            block.released = HELD;
            self.evictable -= 1;
            self.registered.remove(hash, id);
            if let Some(evicted) = &mut self.evicted {
                // Tracking was on when the block was registered, unless it was turned on later.
                let (local, parent) = self
                    .lineage
                    .get(id as usize)
                    .copied()
                    .unwrap_or((LocalBlockHash(0), None));
                evicted.push(Evicted {
                    id,
                    block: HashedBlock {
                        local,
                        sequence: hash,
                    },
                    parent,
                });
            }
            if self.record_events {
                record_removed(&mut self.events, hash);
            }
            return Some(id);
        }
        None
    }

    /// A private block was filled with `block` (following `parent`): register and pin it. If
    /// another sequence registered the same content meanwhile, the private block is freed and
    /// the existing one pinned instead: use the returned block's id from now on.
    pub fn register(
        &mut self,
        private: PrivateBlock,
        parent: Option<SequenceHash>,
        block: HashedBlock,
    ) -> PinnedBlock {
        let id = private.0;
        if let Some(existing) = self.lookup(block.sequence) {
            self.release_one(id);
            if let Some(pinned) = self.pin(existing) {
                return pinned;
            }
        }
        let entry = &mut self.blocks[id as usize];
        entry.hash = block.sequence;
        entry.registered = true;
        self.registered.insert(block.sequence, id);
        if self.evicted.is_some() {
            if self.lineage.len() <= id as usize {
                self.lineage
                    .resize(self.blocks.len(), (LocalBlockHash(0), None));
            }
            self.lineage[id as usize] = (block.local, parent);
        }
        if self.record_events {
            record_stored(&mut self.events, self.block_size, parent, block);
        }
        PinnedBlock(id)
    }

    /// Move the cache changes since the last call, in order, to the end of `into`.
    pub fn take_events_into(&mut self, into: &mut Vec<KvEventData>) {
        into.append(&mut self.events);
    }

    /// The cache changes since the last call, in order.
    pub fn take_events(&mut self) -> Vec<KvEventData> {
        std::mem::take(&mut self.events)
    }

    /// The registered blocks evicted since the last call, in order (empty unless
    /// [`track_evictions`](Self::track_evictions) is on).
    pub fn take_evicted(&mut self) -> Vec<Evicted> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The hashes of the registered blocks, for checking events against the pool's state.
    pub fn registered_hashes(&self) -> impl Iterator<Item = SequenceHash> + '_ {
        self.blocks
            .iter()
            .filter(|block| block.registered)
            .map(|block| block.hash)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::PrivateBlock {}
    impl Sealed for super::PinnedBlock {}
    impl Sealed for super::HeldBlock {}
}

/// A block handle that [`BlockPool::release`] takes back. Only this crate's handles are
/// [`Held`], so no made-up id can be released.
pub trait Held: sealed::Sealed {
    /// Where the block's bytes are.
    fn id(&self) -> BlockId;
}

impl Held for PrivateBlock {
    fn id(&self) -> BlockId {
        self.0
    }
}

impl Held for PinnedBlock {
    fn id(&self) -> BlockId {
        self.0
    }
}

/// A sequence's block, private or pinned, for sequences that keep both in one table.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a block not given back to its pool stays in use"]
pub enum HeldBlock {
    /// Being filled.
    Private(PrivateBlock),
    /// Registered and pinned.
    Pinned(PinnedBlock),
}

impl Held for HeldBlock {
    fn id(&self) -> BlockId {
        match self {
            HeldBlock::Private(block) => block.0,
            HeldBlock::Pinned(block) => block.0,
        }
    }
}

impl From<PrivateBlock> for HeldBlock {
    fn from(block: PrivateBlock) -> Self {
        HeldBlock::Private(block)
    }
}

impl From<PinnedBlock> for HeldBlock {
    fn from(block: PinnedBlock) -> Self {
        HeldBlock::Pinned(block)
    }
}

#[cfg(test)]
mod tests;
