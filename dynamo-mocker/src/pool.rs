//! The paged KV cache of one simulated worker, with prefix caching.
//!
//! A block is *private* while a request fills it, and *registered* under its sequence hash once
//! full. Registered blocks are shared: a request whose prompt starts with registered blocks pins
//! them instead of computing them. A registered block that no request pins stays cached and
//! evictable, least recently released first; a new block takes a never-used slot if one is
//! left, else evicts. Registering a block emits `Stored`; evicting one emits `Removed`.

use std::collections::{BTreeMap, HashMap};

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash};

#[derive(Debug, Clone, Copy)]
struct Registered {
    /// Requests pinning the block.
    pins: u32,
    /// Its place in the eviction order while no request pins it.
    evict_stamp: Option<u64>,
}

/// The blocks of one worker.
#[derive(Debug)]
pub(crate) struct KvPool {
    capacity: u64,
    block_size: BlockSize,
    private: u64,
    registered: HashMap<SequenceHash, Registered, foldhash::fast::RandomState>,
    /// Unpinned registered blocks, by release order (evicted first: the smallest stamp).
    evictable: BTreeMap<u64, SequenceHash>,
    next_stamp: u64,
    events: Vec<KvEventData>,
}

impl KvPool {
    pub(crate) fn new(capacity: u64, block_size: BlockSize) -> Self {
        KvPool {
            capacity,
            block_size,
            private: 0,
            registered: HashMap::default(),
            evictable: BTreeMap::new(),
            next_stamp: 0,
            events: Vec::new(),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Blocks held by requests (private or pinned).
    pub(crate) fn in_use(&self) -> u64 {
        self.private + (self.registered.len() - self.evictable.len()) as u64
    }

    /// Blocks cached but held by no request.
    #[cfg(test)]
    pub(crate) fn evictable(&self) -> u64 {
        self.evictable.len() as u64
    }

    /// Blocks a request could still get (free or evictable).
    pub(crate) fn obtainable(&self) -> u64 {
        self.capacity - self.in_use()
    }

    /// How many leading blocks of `hashes` are registered.
    pub(crate) fn cached_prefix(&self, hashes: &[HashedBlock]) -> usize {
        hashes
            .iter()
            .take_while(|block| self.registered.contains_key(&block.sequence))
            .count()
    }

    /// Pin a registered block.
    pub(crate) fn pin(&mut self, hash: SequenceHash) {
        if let Some(block) = self.registered.get_mut(&hash) {
            block.pins += 1;
            if let Some(stamp) = block.evict_stamp.take() {
                self.evictable.remove(&stamp);
            }
        }
    }

    /// Unpin a registered block; with no pin left it becomes evictable.
    pub(crate) fn unpin(&mut self, hash: SequenceHash) {
        if let Some(block) = self.registered.get_mut(&hash) {
            block.pins = block.pins.saturating_sub(1);
            if block.pins == 0 && block.evict_stamp.is_none() {
                let stamp = self.next_stamp;
                self.next_stamp += 1;
                block.evict_stamp = Some(stamp);
                self.evictable.insert(stamp, hash);
            }
        }
    }

    /// Take `n` private blocks, evicting as needed; `false` (and nothing taken) when fewer than
    /// `n` can be had.
    pub(crate) fn take(&mut self, n: u64) -> bool {
        if self.obtainable() < n {
            return false;
        }
        for _ in 0..n {
            let never_used = self.capacity - self.private - self.registered.len() as u64;
            if never_used == 0 {
                self.evict_one();
            }
            self.private += 1;
        }
        true
    }

    fn evict_one(&mut self) {
        if let Some((_, hash)) = self.evictable.pop_first() {
            self.registered.remove(&hash);
            match self.events.last_mut() {
                Some(KvEventData::Removed { blocks }) => blocks.push(hash),
                _ => self
                    .events
                    .push(KvEventData::Removed { blocks: vec![hash] }),
            }
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
        if self.registered.contains_key(&block.sequence) {
            self.pin(block.sequence);
            return;
        }
        self.registered.insert(
            block.sequence,
            Registered {
                pins: 1,
                evict_stamp: None,
            },
        );
        // Consecutive blocks of one chain go into one `Stored` event.
        if let Some(KvEventData::Stored { blocks, .. }) = self.events.last_mut()
            && blocks.last().map(|b| b.sequence) == parent
            && parent.is_some()
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

    /// The cache changes since the last call, in order.
    pub(crate) fn drain_events(&mut self) -> Vec<KvEventData> {
        std::mem::take(&mut self.events)
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
        assert_eq!(pool.drain_events().len(), 1, "one chain, one Stored event");
        // Release tail first: block 3 is evicted first.
        for id in [3, 2, 1] {
            pool.unpin(SequenceHash(id));
        }
        assert_eq!((pool.in_use(), pool.evictable()), (0, 3));
        assert_eq!(pool.cached_prefix(&[block(1), block(2), block(9)]), 2);
        assert!(pool.take(1));
        assert_eq!(
            pool.drain_events(),
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
