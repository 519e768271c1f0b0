//! The paged KV cache of one simulated worker, with prefix caching.
//!
//! A block is *private* while a request fills it, and *registered* under its sequence hash once
//! full. Registered blocks are shared: a request whose prompt starts with registered blocks pins
//! them instead of computing them. A registered block that no request pins stays cached and
//! evictable, least recently released first; a new block takes a never-used slot if one is
//! left, else evicts. Registering a block emits `Stored`; evicting one emits `Removed`.

mod slot_table;

use std::collections::VecDeque;

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash};

use slot_table::SlotTable;

/// A registered block's place in the pool; valid while the block is pinned.
pub(crate) type Slot = u32;

/// The release stamp of a block that is pinned or free: no queue entry carries it.
const HELD: u64 = 0;

/// A registered block, in a slab.
#[derive(Debug, Clone, Copy)]
struct Registered {
    hash: SequenceHash,
    /// When the block was last released ([`HELD`] while pinned or free).
    released: u64,
    /// Requests pinning the block.
    pins: u32,
}

/// A released block's entry in the eviction queue.
#[derive(Debug, Clone, Copy)]
struct Released {
    slot: Slot,
    /// The block's release stamp when it was queued; the entry is stale once they differ.
    stamp: u64,
    /// The block's hash, so that a batch of evictions can warm the table without reading the
    /// slab first.
    hash: SequenceHash,
}

/// Read every value at once and discard them: the cache misses overlap instead of each waiting
/// for the one before, and the work that follows finds the lines in cache.
fn warm(values: impl Iterator<Item = u64>) {
    std::hint::black_box(values.fold(0, |all, value| all ^ value));
}

/// The blocks of one worker.
///
/// Eviction order is a queue of `(slot, release stamp)` in release order. Pinning a block does
/// not touch the queue: its entry goes stale (the block's stamp no longer matches) and is
/// skipped when it reaches the front. Every operation but registering, evicting and looking up
/// a prefix works on slots, without hashing.
#[derive(Debug)]
pub(crate) struct KvPool {
    capacity: u64,
    block_size: BlockSize,
    private: u64,
    slots: SlotTable,
    slab: Vec<Registered>,
    free_slab: Vec<Slot>,
    /// Released blocks, least recently released first; entries whose stamp is stale are
    /// skipped.
    released: VecDeque<Released>,
    next_stamp: u64,
    evictable: u64,
    /// Whether cache changes are recorded in `events`.
    record_events: bool,
    /// Cache changes not yet reported, in order.
    pub(crate) events: Vec<KvEventData>,
}

impl KvPool {
    pub(crate) fn new(capacity: u64, block_size: BlockSize) -> Self {
        // Registered blocks never outnumber the capacity: size the map once.
        let expected = usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 20);
        KvPool {
            capacity,
            block_size,
            private: 0,
            slots: SlotTable::with_capacity(expected),
            slab: Vec::with_capacity(expected),
            free_slab: Vec::new(),
            released: VecDeque::new(),
            next_stamp: HELD + 1,
            evictable: 0,
            record_events: true,
            events: Vec::new(),
        }
    }

    /// Record cache changes in `events` (on by default).
    pub(crate) fn record_events(&mut self, record: bool) {
        self.record_events = record;
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Blocks held by requests (private or pinned).
    pub(crate) fn in_use(&self) -> u64 {
        self.private + self.slots.len() as u64 - self.evictable
    }

    /// Blocks cached but held by no request.
    #[cfg(test)]
    pub(crate) fn evictable(&self) -> u64 {
        self.evictable
    }

    /// Blocks a request could still get (free or evictable).
    pub(crate) fn obtainable(&self) -> u64 {
        self.capacity - self.in_use()
    }

    /// The slots of the leading blocks of `hashes` that are registered, appended to `slots`.
    /// They stay valid until the next eviction, or for as long as they are pinned.
    pub(crate) fn cached_prefix(&self, hashes: &[HashedBlock], slots: &mut Vec<Slot>) {
        // Look ahead in batches that double while blocks are found, warming each batch first:
        // a prefix that ends early costs little, and a long one costs overlapping misses.
        let (mut start, mut batch) = (0, 4);
        while start < hashes.len() {
            let chunk = &hashes[start..(start + batch).min(hashes.len())];
            self.warm_registrations(chunk);
            for block in chunk {
                match self
                    .slots
                    .get(block.sequence, |slot| self.slab[slot as usize].hash)
                {
                    Some(slot) => slots.push(slot),
                    None => return,
                }
            }
            start += chunk.len();
            batch = (batch * 2).min(64);
        }
    }

    /// Pin a registered block.
    pub(crate) fn pin(&mut self, slot: Slot) {
        let block = &mut self.slab[slot as usize];
        if block.pins == 0 {
            block.released = HELD;
            self.evictable -= 1;
        }
        block.pins += 1;
    }

    /// Unpin a registered block; with no pin left it becomes the most recent evictable one.
    pub(crate) fn unpin(&mut self, slot: Slot) {
        let block = &mut self.slab[slot as usize];
        if block.pins == 0 {
            return;
        }
        block.pins -= 1;
        if block.pins == 0 {
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            block.released = stamp;
            let hash = block.hash;
            self.released.push_back(Released { slot, stamp, hash });
            self.evictable += 1;
            self.compact_if_stale();
        }
    }

    /// Drop stale queue entries once they outnumber the live ones, so the queue stays
    /// proportional to the pool.
    fn compact_if_stale(&mut self) {
        if self.released.len() as u64 > 2 * self.evictable + 1024 {
            let slab = &self.slab;
            self.released
                .retain(|entry| slab[entry.slot as usize].released == entry.stamp);
        }
    }

    /// Unpin each of `slots`, the last first (so that a sequence's tail is evicted before its
    /// head).
    pub(crate) fn unpin_all(&mut self, slots: &[Slot]) {
        warm(slots.iter().map(|&slot| self.slab[slot as usize].released));
        for &slot in slots.iter().rev() {
            self.unpin(slot);
        }
    }

    /// Bring into cache what registering or looking up `blocks` reads first.
    pub(crate) fn warm_registrations(&self, blocks: &[HashedBlock]) {
        warm(blocks.iter().map(|block| self.slots.touch(block.sequence)));
    }

    /// Take `n` private blocks, evicting as needed; `false` (and nothing taken) when fewer than
    /// `n` can be had.
    pub(crate) fn take(&mut self, n: u64) -> bool {
        if self.obtainable() < n {
            return false;
        }
        let never_used = self.capacity - self.private - self.slots.len() as u64;
        let evictions = n.saturating_sub(never_used);
        if evictions > 1 {
            let next = self.released.iter().take(evictions as usize);
            warm(next.map(|entry| {
                self.slab[entry.slot as usize].released ^ self.slots.touch(entry.hash)
            }));
        }
        for _ in 0..evictions {
            self.evict_oldest();
        }
        self.private += n;
        true
    }

    fn evict_oldest(&mut self) {
        while let Some(Released { slot, stamp, .. }) = self.released.pop_front() {
            let block = &mut self.slab[slot as usize];
            if block.released != stamp {
                continue;
            }
            block.released = HELD;
            let hash = block.hash;
            self.evictable -= 1;
            self.slots.remove(hash, slot);
            self.free_slab.push(slot);
            if !self.record_events {
                return;
            }
            match self.events.last_mut() {
                Some(KvEventData::Removed { blocks }) => blocks.push(hash),
                _ => self
                    .events
                    .push(KvEventData::Removed { blocks: vec![hash] }),
            }
            return;
        }
    }

    /// Give back `n` private blocks.
    pub(crate) fn release_private(&mut self, n: u64) {
        self.private = self.private.saturating_sub(n);
    }

    /// A request filled one of its private blocks: register it under its hash (following
    /// `parent`) and pin it; its slot. If another request registered the same content
    /// meanwhile, the private block is freed and the existing one pinned instead.
    pub(crate) fn register(&mut self, parent: Option<SequenceHash>, block: HashedBlock) -> Slot {
        self.release_private(1);
        let slab = &self.slab;
        if let Some(slot) = self
            .slots
            .get(block.sequence, |slot| slab[slot as usize].hash)
        {
            self.pin(slot);
            return slot;
        }
        let entry = Registered {
            hash: block.sequence,
            released: HELD,
            pins: 1,
        };
        let slot = match self.free_slab.pop() {
            Some(slot) => {
                self.slab[slot as usize] = entry;
                slot
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as Slot
            }
        };
        self.slots.insert(block.sequence, slot);
        if !self.record_events {
            return slot;
        }
        // Consecutive blocks of one chain go into one `Stored` event.
        if let Some(KvEventData::Stored { blocks, .. }) = self.events.last_mut()
            && parent.is_some()
            && blocks.last().map(|b| b.sequence) == parent
        {
            blocks.push(block);
            return slot;
        }
        self.events.push(KvEventData::Stored {
            parent,
            block_size: self.block_size,
            blocks: vec![block],
        });
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_core::LocalBlockHash;

    fn block(id: u64) -> HashedBlock {
        HashedBlock {
            local: LocalBlockHash(id),
            sequence: SequenceHash(id),
        }
    }

    #[test]
    fn released_blocks_stay_cached_until_evicted_least_recent_first() {
        let mut pool = KvPool::new(3, BlockSize::new(4).unwrap());
        assert!(pool.take(3));
        let slots = [
            pool.register(None, block(1)),
            pool.register(Some(SequenceHash(1)), block(2)),
            pool.register(Some(SequenceHash(2)), block(3)),
        ];
        assert_eq!(
            std::mem::take(&mut pool.events).len(),
            1,
            "one chain, one Stored event"
        );
        // Release tail first: block 3 is evicted first.
        for slot in slots.iter().rev() {
            pool.unpin(*slot);
        }
        assert_eq!((pool.in_use(), pool.evictable()), (0, 3));
        let mut found = Vec::new();
        pool.cached_prefix(&[block(1), block(2), block(9)], &mut found);
        assert_eq!(found, slots[..2]);
        assert!(pool.take(1));
        assert_eq!(
            std::mem::take(&mut pool.events),
            [KvEventData::Removed {
                blocks: vec![SequenceHash(3)]
            }]
        );
        pool.pin(slots[0]);
        assert!(pool.take(1), "block 2 is evictable");
        assert!(!pool.take(1), "block 1 is pinned, the rest private");
        assert_eq!(pool.in_use(), 3);
    }
}
