//! Which KV blocks hold what: allocation, prefix caching, LRU eviction and KV events.
//!
//! A block is *private* while its sequence fills it and *registered* under its sequence hash
//! once full. A registered block can be shared: a new sequence whose prompt starts with
//! registered blocks takes references to them instead of computing them. A block nobody
//! references goes back to the free list if private, or stays cached (evictable, least recently
//! released first) if registered. Registering emits `Stored`, evicting emits `Removed`.

use std::collections::{BTreeMap, HashMap};

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash};

/// A physical block's index in the KV store.
pub(crate) type BlockId = u32;

/// The bookkeeping of a fixed number of KV blocks.
#[derive(Debug)]
pub struct BlockPool {
    block_size: BlockSize,
    /// Blocks holding nothing.
    free: Vec<BlockId>,
    /// References per block.
    refs: Vec<u32>,
    /// The sequence hash a block is registered under.
    registered: Vec<Option<SequenceHash>>,
    /// Registered blocks by hash.
    by_hash: HashMap<SequenceHash, BlockId>,
    /// Registered blocks nobody references, by release time (oldest first).
    evictable: BTreeMap<u64, BlockId>,
    released_at: Vec<u64>,
    clock: u64,
    /// Cache changes not yet reported, in order.
    events: Vec<KvEventData>,
}

/// The pool's counters, as the engine reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounters {
    /// All blocks.
    pub capacity: usize,
    /// Blocks some sequence references.
    pub in_use: usize,
    /// Registered blocks nobody references (reusable until evicted).
    pub cached: usize,
    /// Blocks holding nothing.
    pub free: usize,
}

impl BlockPool {
    /// A pool of `capacity` empty blocks.
    pub fn new(capacity: u32, block_size: BlockSize) -> Self {
        let blocks = capacity as usize;
        BlockPool {
            block_size,
            free: (0..capacity).rev().collect(),
            refs: vec![0; blocks],
            registered: vec![None; blocks],
            by_hash: HashMap::new(),
            evictable: BTreeMap::new(),
            released_at: vec![0; blocks],
            clock: 0,
            events: Vec::new(),
        }
    }

    /// The counters now.
    pub fn counters(&self) -> PoolCounters {
        PoolCounters {
            capacity: self.refs.len(),
            in_use: self.refs.iter().filter(|&&refs| refs > 0).count(),
            cached: self.evictable.len(),
            free: self.free.len(),
        }
    }

    /// Blocks that [`BlockPool::allocate`] can still hand out.
    pub(crate) fn obtainable(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// The registered blocks holding the longest prefix of `hashes`, referenced for the caller.
    pub(crate) fn take_cached_prefix(&mut self, hashes: &[SequenceHash]) -> Vec<BlockId> {
        let mut blocks = Vec::new();
        for hash in hashes {
            let Some(&block) = self.by_hash.get(hash) else {
                break;
            };
            self.reference(block);
            blocks.push(block);
        }
        blocks
    }

    fn reference(&mut self, block: BlockId) {
        let index = block as usize;
        if self.refs[index] == 0 {
            self.evictable.remove(&self.released_at[index]);
        }
        self.refs[index] += 1;
    }

    /// A private block for the caller: a free one, else the least recently released cached one
    /// (evicted, with a `Removed` event). `None` when every block is referenced.
    pub(crate) fn allocate(&mut self) -> Option<BlockId> {
        let block = match self.free.pop() {
            Some(block) => block,
            None => {
                let (_, block) = self.evictable.pop_first()?;
                if let Some(hash) = self.registered[block as usize].take() {
                    self.by_hash.remove(&hash);
                    self.events
                        .push(KvEventData::Removed { blocks: vec![hash] });
                }
                block
            }
        };
        self.refs[block as usize] = 1;
        Some(block)
    }

    /// A private block was filled: register it under its hash, unless another block already
    /// holds the same content (the block then stays private and is freed when released).
    pub(crate) fn register(
        &mut self,
        block: BlockId,
        parent: Option<SequenceHash>,
        hashed: HashedBlock,
    ) {
        if self.registered[block as usize].is_some() || self.by_hash.contains_key(&hashed.sequence)
        {
            return;
        }
        self.registered[block as usize] = Some(hashed.sequence);
        self.by_hash.insert(hashed.sequence, block);
        self.events.push(KvEventData::Stored {
            parent,
            block_size: self.block_size,
            blocks: vec![hashed],
        });
    }

    /// Drop one reference to each block; unreferenced blocks become cached or free.
    pub(crate) fn release(&mut self, blocks: &[BlockId]) {
        for &block in blocks {
            let index = block as usize;
            self.refs[index] = self.refs[index].saturating_sub(1);
            if self.refs[index] > 0 {
                continue;
            }
            if self.registered[index].is_some() {
                self.clock += 1;
                self.released_at[index] = self.clock;
                self.evictable.insert(self.clock, block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// The cache changes since the last call, in order.
    pub(crate) fn take_events(&mut self) -> Vec<KvEventData> {
        std::mem::take(&mut self.events)
    }

    /// The hashes of the registered blocks, for checking events against the pool's state.
    pub fn registered_hashes(&self) -> impl Iterator<Item = SequenceHash> + '_ {
        self.by_hash.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use dynamo_core::BlockHasher;
    use proptest::prelude::*;

    use super::*;

    /// What a test sequence does next.
    #[derive(Debug, Clone)]
    enum Op {
        /// Start a sequence of `blocks` full blocks drawn from a small alphabet of contents,
        /// reusing what is cached and registering the rest.
        Start(Vec<u32>),
        /// Finish the `n`-th live sequence.
        Finish(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(0u32..3, 1..5).prop_map(Op::Start),
            (0usize..8).prop_map(Op::Finish),
        ]
    }

    proptest! {
        /// Replaying the pool's events onto a set gives exactly the registered blocks, and
        /// every block is in use, cached or free, never two at once.
        #[test]
        fn events_describe_the_registered_blocks(ops in proptest::collection::vec(op(), 1..60)) {
            let block_size = BlockSize::new(2).unwrap_or_else(|_| unreachable!());
            let hasher = BlockHasher::new(block_size);
            let mut pool = BlockPool::new(10, block_size);
            let mut live: Vec<Vec<BlockId>> = Vec::new();
            let mut announced: HashSet<SequenceHash> = HashSet::new();
            for op in ops {
                match op {
                    Op::Start(contents) => {
                        let tokens: Vec<u32> = contents.iter().flat_map(|&c| [c, c + 10]).collect();
                        let hashed = hasher.hash_blocks(&tokens);
                        let hashes: Vec<SequenceHash> = hashed.iter().map(|h| h.sequence).collect();
                        let mut blocks = pool.take_cached_prefix(&hashes);
                        let cached = blocks.len();
                        if pool.obtainable() < hashed.len() - cached {
                            pool.release(&blocks);
                            continue;
                        }
                        for (i, block) in hashed.iter().enumerate().skip(cached) {
                            let Some(id) = pool.allocate() else { unreachable!("checked obtainable") };
                            let parent = i.checked_sub(1).map(|p| hashed[p].sequence);
                            pool.register(id, parent, *block);
                            blocks.push(id);
                        }
                        live.push(blocks);
                    }
                    Op::Finish(n) => {
                        if !live.is_empty() {
                            let blocks = live.remove(n % live.len());
                            pool.release(&blocks);
                        }
                    }
                }
                for event in pool.take_events() {
                    match event {
                        KvEventData::Stored { blocks, .. } => {
                            for block in blocks {
                                prop_assert!(announced.insert(block.sequence), "stored twice");
                            }
                        }
                        KvEventData::Removed { blocks } => {
                            for hash in blocks {
                                prop_assert!(announced.remove(&hash), "removed unknown");
                            }
                        }
                        KvEventData::Cleared => announced.clear(),
                        _ => {}
                    }
                }
                let registered: HashSet<SequenceHash> = pool.registered_hashes().collect();
                prop_assert_eq!(&registered, &announced);
                let counters = pool.counters();
                prop_assert_eq!(counters.in_use + counters.cached + counters.free, counters.capacity);
            }
        }
    }
}
