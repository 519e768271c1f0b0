//! The paged KV cache of one simulated worker, with prefix caching.
//!
//! A block is *private* while a request fills it, and *registered* under its sequence hash once
//! full. Registered blocks are shared: a request whose prompt starts with registered blocks pins
//! them instead of computing them. A registered block that no request pins stays cached and
//! evictable, least recently released first; a new block takes a never-used slot if one is
//! left, else evicts. Registering a block emits `Stored`; evicting one emits `Removed`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash};

/// No slot: the end of the eviction list.
const NIL: u32 = u32::MAX;

/// A registered block, in a slab; unpinned blocks are linked in eviction order.
#[derive(Debug, Clone, Copy)]
struct Registered {
    hash: SequenceHash,
    /// Requests pinning the block.
    pins: u32,
    /// Neighbours in the eviction list, while no request pins the block.
    prev: u32,
    next: u32,
}

/// The blocks of one worker.
#[derive(Debug)]
pub(crate) struct KvPool {
    capacity: u64,
    block_size: BlockSize,
    private: u64,
    slots: HashMap<SequenceHash, u32, foldhash::fast::RandomState>,
    slab: Vec<Registered>,
    free_slab: Vec<u32>,
    /// The eviction list: least recently released first.
    oldest: u32,
    newest: u32,
    evictable: u64,
    /// Cache changes not yet reported, in order.
    pub(crate) events: Vec<KvEventData>,
}

impl KvPool {
    pub(crate) fn new(capacity: u64, block_size: BlockSize) -> Self {
        KvPool {
            capacity,
            block_size,
            private: 0,
            slots: HashMap::default(),
            slab: Vec::new(),
            free_slab: Vec::new(),
            oldest: NIL,
            newest: NIL,
            evictable: 0,
            events: Vec::new(),
        }
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

    /// How many leading blocks of `hashes` are registered.
    pub(crate) fn cached_prefix(&self, hashes: &[HashedBlock]) -> usize {
        hashes
            .iter()
            .take_while(|block| self.slots.contains_key(&block.sequence))
            .count()
    }

    /// Pin a registered block.
    pub(crate) fn pin(&mut self, hash: SequenceHash) {
        if let Some(&slot) = self.slots.get(&hash) {
            if self.slab[slot as usize].pins == 0 {
                self.unlink(slot);
            }
            self.slab[slot as usize].pins += 1;
        }
    }

    /// Unpin a registered block; with no pin left it becomes the most recent evictable one.
    pub(crate) fn unpin(&mut self, hash: SequenceHash) {
        if let Some(&slot) = self.slots.get(&hash) {
            let block = &mut self.slab[slot as usize];
            if block.pins == 0 {
                return;
            }
            block.pins -= 1;
            if block.pins == 0 {
                self.link_newest(slot);
            }
        }
    }

    fn unlink(&mut self, slot: u32) {
        let Registered { prev, next, .. } = self.slab[slot as usize];
        match prev {
            NIL => self.oldest = next,
            prev => self.slab[prev as usize].next = next,
        }
        match next {
            NIL => self.newest = prev,
            next => self.slab[next as usize].prev = prev,
        }
        self.evictable -= 1;
    }

    fn link_newest(&mut self, slot: u32) {
        let block = &mut self.slab[slot as usize];
        block.prev = self.newest;
        block.next = NIL;
        match self.newest {
            NIL => self.oldest = slot,
            newest => self.slab[newest as usize].next = slot,
        }
        self.newest = slot;
        self.evictable += 1;
    }

    /// Take `n` private blocks, evicting as needed; `false` (and nothing taken) when fewer than
    /// `n` can be had.
    pub(crate) fn take(&mut self, n: u64) -> bool {
        if self.obtainable() < n {
            return false;
        }
        let never_used = self.capacity - self.private - self.slots.len() as u64;
        for _ in never_used..n {
            self.evict_oldest();
        }
        self.private += n;
        true
    }

    fn evict_oldest(&mut self) {
        let slot = self.oldest;
        if slot == NIL {
            return;
        }
        self.unlink(slot);
        let hash = self.slab[slot as usize].hash;
        self.slots.remove(&hash);
        self.free_slab.push(slot);
        match self.events.last_mut() {
            Some(KvEventData::Removed { blocks }) => blocks.push(hash),
            _ => self
                .events
                .push(KvEventData::Removed { blocks: vec![hash] }),
        }
    }

    /// Give back `n` private blocks.
    pub(crate) fn release_private(&mut self, n: u64) {
        self.private = self.private.saturating_sub(n);
    }

    /// A request filled one of its private blocks: register it under its hash (following
    /// `parent`) and pin it. If another request registered the same content meanwhile, the
    /// private block is freed and the existing one pinned instead.
    pub(crate) fn register(&mut self, parent: Option<SequenceHash>, block: HashedBlock) {
        self.release_private(1);
        let free = match self.slots.entry(block.sequence) {
            Entry::Occupied(held) => {
                let slot = *held.get();
                if self.slab[slot as usize].pins == 0 {
                    self.unlink(slot);
                }
                self.slab[slot as usize].pins += 1;
                return;
            }
            Entry::Vacant(free) => free,
        };
        let entry = Registered {
            hash: block.sequence,
            pins: 1,
            prev: NIL,
            next: NIL,
        };
        let slot = match self.free_slab.pop() {
            Some(slot) => {
                self.slab[slot as usize] = entry;
                slot
            }
            None => {
                self.slab.push(entry);
                (self.slab.len() - 1) as u32
            }
        };
        free.insert(slot);
        // Consecutive blocks of one chain go into one `Stored` event.
        if let Some(KvEventData::Stored { blocks, .. }) = self.events.last_mut()
            && parent.is_some()
            && blocks.last().map(|b| b.sequence) == parent
        {
            blocks.push(block);
            return;
        }
        self.events.push(KvEventData::Stored {
            parent,
            block_size: self.block_size,
            blocks: vec![block],
        });
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
        pool.register(None, block(1));
        pool.register(Some(SequenceHash(1)), block(2));
        pool.register(Some(SequenceHash(2)), block(3));
        assert_eq!(
            std::mem::take(&mut pool.events).len(),
            1,
            "one chain, one Stored event"
        );
        // Release tail first: block 3 is evicted first.
        for id in [3, 2, 1] {
            pool.unpin(SequenceHash(id));
        }
        assert_eq!((pool.in_use(), pool.evictable()), (0, 3));
        assert_eq!(pool.cached_prefix(&[block(1), block(2), block(9)]), 2);
        assert!(pool.take(1));
        assert_eq!(
            std::mem::take(&mut pool.events),
            [KvEventData::Removed {
                blocks: vec![SequenceHash(3)]
            }]
        );
        pool.pin(SequenceHash(1));
        assert!(pool.take(1), "block 2 is evictable");
        assert!(!pool.take(1), "block 1 is pinned, the rest private");
        assert_eq!(pool.in_use(), 3);
    }
}
