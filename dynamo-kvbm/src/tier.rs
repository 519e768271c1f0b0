//! [`TierIndex`]: which blocks one lower tier (host, disk, remote) holds, within its capacity.

use std::collections::HashMap;

use dynamo_core::{BlockSize, HashedBlock, KvEventData, LocalBlockHash, SequenceHash, StorageTier};

use crate::changes::{record_removed, record_stored};
use crate::eviction::{AdmissionFilter, AdmitAll, EvictionPolicy, Lru};

/// What a tier did with a block it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Stored now.
    Stored,
    /// It held the block already (its recency is refreshed).
    Held,
    /// Its admission filter declined the block.
    Declined,
}

/// A tier's counters since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierCounters {
    /// Blocks stored.
    pub stored: u64,
    /// Blocks evicted to make room.
    pub evicted: u64,
    /// Blocks its admission filter declined.
    pub declined: u64,
    /// Blocks found by prefix lookups.
    pub hits: u64,
}

/// The bookkeeping of one lower tier: which blocks it holds, evicting by its
/// [`EvictionPolicy`] when full and admitting by its [`AdmissionFilter`], with the KV event of
/// every change. It holds no bytes: pair it with a [`BlockStore`](crate::BlockStore) to keep
/// them, or use it alone to simulate a tier (as the mocker does).
///
/// A tier's `Stored` event names the block's parent only when the tier holds the parent too;
/// otherwise the block starts a chain of its own in that tier (sequence hashes identify blocks
/// with their whole prefix, so indexes keyed by them need no parent).
///
/// # Example
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize, StorageTier};
/// use dynamo_kvbm::{Offer, TierIndex};
///
/// let block_size = BlockSize::new(4)?;
/// let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
/// let mut host = TierIndex::new(StorageTier::Host, 2, block_size);
/// let mut evicted = Vec::new();
/// assert_eq!(host.offer(blocks[0], None, &mut evicted), Offer::Stored);
/// assert_eq!(host.offer(blocks[1], Some(blocks[0].sequence), &mut evicted), Offer::Stored);
/// assert_eq!(host.prefix(&blocks), 2);
/// assert_eq!(host.take_events().len(), 1, "one chain, one Stored event");
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug)]
pub struct TierIndex {
    tier: StorageTier,
    capacity: usize,
    block_size: BlockSize,
    /// Held blocks: their local hash and parent.
    held:
        HashMap<SequenceHash, (LocalBlockHash, Option<SequenceHash>), foldhash::fast::RandomState>,
    policy: Box<dyn EvictionPolicy>,
    admission: Box<dyn AdmissionFilter>,
    events: Vec<KvEventData>,
    counters: TierCounters,
}

/// A block a tier evicted, with what the tier below needs to keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Its hashes.
    pub block: HashedBlock,
    /// The block before it in its sequence, if known.
    pub parent: Option<SequenceHash>,
}

impl TierIndex {
    /// An empty tier of `capacity` blocks, least recently used evicted first, admitting all.
    pub fn new(tier: StorageTier, capacity: usize, block_size: BlockSize) -> Self {
        TierIndex {
            tier,
            capacity,
            block_size,
            held: HashMap::default(),
            policy: Box::new(Lru::default()),
            admission: Box::new(AdmitAll),
            events: Vec::new(),
            counters: TierCounters::default(),
        }
    }

    /// Evict by `policy` instead.
    pub fn with_policy(mut self, policy: impl EvictionPolicy + 'static) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// Admit by `filter` instead.
    pub fn with_admission(mut self, filter: impl AdmissionFilter + 'static) -> Self {
        self.admission = Box::new(filter);
        self
    }

    /// The tier.
    pub fn tier(&self) -> StorageTier {
        self.tier
    }

    /// Its capacity in blocks.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether it holds `hash`.
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.held.contains_key(&hash)
    }

    /// The counters so far.
    pub fn counters(&self) -> TierCounters {
        self.counters
    }

    /// Offer `block` (following `parent`) to the tier. When the tier is full, its policy's
    /// victims are evicted first and appended to `dropped`, for the tier below.
    pub fn offer(
        &mut self,
        block: HashedBlock,
        parent: Option<SequenceHash>,
        dropped: &mut Vec<Dropped>,
    ) -> Offer {
        if self.held.contains_key(&block.sequence) {
            self.policy.touched(block.sequence);
            return Offer::Held;
        }
        if self.capacity == 0 || !self.admission.admit(block.sequence) {
            self.counters.declined += 1;
            return Offer::Declined;
        }
        while self.held.len() >= self.capacity {
            let Some(victim) = self.policy.victim() else {
                break;
            };
            if let Some((local, parent)) = self.evict(victim) {
                dropped.push(Dropped {
                    block: HashedBlock {
                        local,
                        sequence: victim,
                    },
                    parent,
                });
                self.counters.evicted += 1;
            }
        }
        let parent = parent.filter(|parent| self.held.contains_key(parent));
        self.held.insert(block.sequence, (block.local, parent));
        self.policy.inserted(block.sequence, parent);
        self.counters.stored += 1;
        record_stored(&mut self.events, self.block_size, parent, block);
        Offer::Stored
    }

    fn evict(&mut self, hash: SequenceHash) -> Option<(LocalBlockHash, Option<SequenceHash>)> {
        self.policy.removed(hash);
        let held = self.held.remove(&hash)?;
        record_removed(&mut self.events, hash);
        Some(held)
    }

    /// Forget `hash`; whether the tier held it.
    pub fn remove(&mut self, hash: SequenceHash) -> bool {
        self.evict(hash).is_some()
    }

    /// Mark `hash` used, if the tier holds it.
    pub fn touch(&mut self, hash: SequenceHash) {
        if self.held.contains_key(&hash) {
            self.policy.touched(hash);
        }
    }

    /// How many leading blocks of `blocks` the tier holds; each is marked used.
    pub fn prefix(&mut self, blocks: &[HashedBlock]) -> usize {
        let found = blocks
            .iter()
            .take_while(|block| self.held.contains_key(&block.sequence))
            .count();
        for block in &blocks[..found] {
            self.policy.touched(block.sequence);
        }
        self.counters.hits += found as u64;
        found
    }

    /// The tier's cache changes since the last call, in order.
    pub fn take_events(&mut self) -> Vec<KvEventData> {
        std::mem::take(&mut self.events)
    }

    /// Move the tier's cache changes since the last call to the end of `into`.
    pub fn take_events_into(&mut self, into: &mut Vec<KvEventData>) {
        into.append(&mut self.events);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::{LeavesFirst, SeenTwice};

    #[derive(Debug, Clone)]
    enum Op {
        /// Offer block `n` of a chain (its parent is `n - 1`).
        Offer(u64),
        Remove(u64),
        Prefix(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..12).prop_map(Op::Offer),
            1 => (0u64..12).prop_map(Op::Remove),
            1 => (0u64..12).prop_map(Op::Prefix),
        ]
    }

    fn block(n: u64) -> HashedBlock {
        HashedBlock {
            local: LocalBlockHash(n),
            sequence: SequenceHash(n),
        }
    }

    fn tiers() -> Vec<TierIndex> {
        let block_size = BlockSize::new(4).expect("a valid block size");
        vec![
            TierIndex::new(StorageTier::Host, 4, block_size),
            TierIndex::new(StorageTier::Disk, 4, block_size).with_policy(LeavesFirst::default()),
            TierIndex::new(StorageTier::Disk, 4, block_size).with_admission(SeenTwice::new(8)),
        ]
    }

    proptest! {
        /// Whatever the policy and filter: the tier never holds more than its capacity, the
        /// blocks it drops are what it held, and replaying its events gives what it holds.
        #[test]
        fn events_replay_to_what_the_tier_holds(ops in proptest::collection::vec(op(), 1..80)) {
            for mut tier in tiers() {
                let mut held: HashSet<SequenceHash> = HashSet::new();
                let mut replayed: HashSet<SequenceHash> = HashSet::new();
                for op in &ops {
                    match *op {
                        Op::Offer(n) => {
                            let parent = n.checked_sub(1).map(SequenceHash);
                            let mut dropped = Vec::new();
                            let offer = tier.offer(block(n), parent, &mut dropped);
                            for gone in &dropped {
                                prop_assert!(held.remove(&gone.block.sequence), "dropped unheld");
                            }
                            if offer == Offer::Stored {
                                prop_assert!(held.insert(SequenceHash(n)));
                            }
                        }
                        Op::Remove(n) => {
                            prop_assert_eq!(tier.remove(SequenceHash(n)), held.remove(&SequenceHash(n)));
                        }
                        Op::Prefix(n) => {
                            let chain: Vec<HashedBlock> = (0..=n).map(block).collect();
                            let found = tier.prefix(&chain);
                            let expected = (0..=n).take_while(|i| held.contains(&SequenceHash(*i))).count();
                            prop_assert_eq!(found, expected);
                        }
                    }
                    prop_assert!(tier.len() <= tier.capacity());
                    prop_assert_eq!(tier.len(), held.len());
                    for event in tier.take_events() {
                        match event {
                            KvEventData::Stored { blocks, .. } => {
                                for b in blocks {
                                    prop_assert!(replayed.insert(b.sequence), "stored twice");
                                }
                            }
                            KvEventData::Removed { blocks } => {
                                for hash in blocks {
                                    prop_assert!(replayed.remove(&hash), "removed unknown");
                                }
                            }
                            _ => {}
                        }
                    }
                    prop_assert_eq!(&replayed, &held);
                }
            }
        }
    }

    #[test]
    fn a_leaves_first_tier_never_keeps_a_block_whose_parent_it_dropped() {
        let block_size = BlockSize::new(4).expect("a valid block size");
        let mut tier =
            TierIndex::new(StorageTier::Disk, 3, block_size).with_policy(LeavesFirst::default());
        let mut dropped = Vec::new();
        for n in 0..3 {
            tier.offer(block(n), n.checked_sub(1).map(SequenceHash), &mut dropped);
        }
        // The root is used last, but the chain's leaf goes first, then its parent.
        tier.touch(SequenceHash(0));
        tier.offer(block(10), None, &mut dropped);
        tier.offer(block(11), Some(SequenceHash(10)), &mut dropped);
        let gone: Vec<u64> = dropped.iter().map(|d| d.block.sequence.0).collect();
        assert_eq!(gone, [2, 1]);
        assert!(tier.contains(SequenceHash(0)));
    }
}
