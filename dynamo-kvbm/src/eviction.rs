//! Which block a lower tier drops when it is full, and which blocks it takes at all.
//!
//! - [`Lru`]: the least recently stored or read block goes first. The default.
//! - [`LeavesFirst`]: only blocks with no child in the tier are candidates, least recently used
//!   first, so a tier does not keep a block whose prefix it has dropped (such a block can never
//!   be onboarded: a prefix is read from its start). A child counts only if it was stored while
//!   its parent was held: one stored before its parent is not linked to it.
//! - [`SeenTwice`]: an admission filter for tiers that wear (disks): a block is stored only the
//!   second time it is offered within a window, so one-off prefixes are never written.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use dynamo_core::SequenceHash;

/// The eviction order of one tier. The tier tells it what it holds; it names the victim.
pub trait EvictionPolicy: Send + fmt::Debug {
    /// `hash` was stored, following `parent` (`None`: the start of a sequence, or unknown).
    fn inserted(&mut self, hash: SequenceHash, parent: Option<SequenceHash>);

    /// `hash` was read.
    fn touched(&mut self, hash: SequenceHash);

    /// `hash` is gone (evicted or removed).
    fn removed(&mut self, hash: SequenceHash);

    /// The block to evict next, if any; the tier then removes it and calls
    /// [`removed`](Self::removed).
    fn victim(&mut self) -> Option<SequenceHash>;
}

/// Least recently used first.
///
/// Every use appends `(hash, stamp)` to a queue and records the stamp; an entry whose stamp is
/// no longer the block's is stale and skipped when it reaches the front. A use costs one
/// append and one map write, never a search, and the queue is compacted when stale entries
/// outnumber live ones.
#[derive(Debug, Default)]
pub struct Lru {
    clock: u64,
    queue: VecDeque<(SequenceHash, u64)>,
    stamps: HashMap<SequenceHash, u64, foldhash::fast::RandomState>,
}

impl Lru {
    fn stamp(&mut self, hash: SequenceHash) {
        self.clock += 1;
        self.stamps.insert(hash, self.clock);
        self.queue.push_back((hash, self.clock));
        if self.queue.len() > 2 * self.stamps.len() + 1024 {
            let stamps = &self.stamps;
            self.queue
                .retain(|(hash, stamp)| stamps.get(hash) == Some(stamp));
        }
    }
}

impl EvictionPolicy for Lru {
    fn inserted(&mut self, hash: SequenceHash, _parent: Option<SequenceHash>) {
        self.stamp(hash);
    }

    fn touched(&mut self, hash: SequenceHash) {
        if self.stamps.contains_key(&hash) {
            self.stamp(hash);
        }
    }

    fn removed(&mut self, hash: SequenceHash) {
        self.stamps.remove(&hash);
    }

    fn victim(&mut self) -> Option<SequenceHash> {
        while let Some(&(hash, stamp)) = self.queue.front() {
            if self.stamps.get(&hash) == Some(&stamp) {
                return Some(hash);
            }
            self.queue.pop_front();
        }
        None
    }
}

/// A block in [`LeavesFirst`].
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The parent held in the tier when this block was stored, with the parent's `born`: a
    /// parent removed and stored again since is another node, which this one is not a child of.
    parent: Option<(SequenceHash, u64)>,
    /// When the node was stored; unique.
    born: u64,
    /// Children held in the tier.
    children: u32,
    stamp: u64,
}

/// Leaves first, least recently used among them: a parent outlives its children.
#[derive(Debug, Default)]
pub struct LeavesFirst {
    clock: u64,
    nodes: HashMap<SequenceHash, Node, foldhash::fast::RandomState>,
    /// Blocks with no child in the tier, by last use.
    leaves: BTreeMap<u64, SequenceHash>,
}

impl LeavesFirst {
    fn restamp(&mut self, hash: SequenceHash) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(node) = self.nodes.get_mut(&hash) {
            if node.children == 0 {
                self.leaves.remove(&node.stamp);
                self.leaves.insert(clock, hash);
            }
            node.stamp = clock;
        }
    }
}

impl EvictionPolicy for LeavesFirst {
    fn inserted(&mut self, hash: SequenceHash, parent: Option<SequenceHash>) {
        if self.nodes.contains_key(&hash) {
            self.restamp(hash);
            return;
        }
        let mut linked = None;
        if let Some(parent) = parent
            && let Some(node) = self.nodes.get_mut(&parent)
        {
            if node.children == 0 {
                self.leaves.remove(&node.stamp);
            }
            node.children += 1;
            linked = Some((parent, node.born));
        }
        self.clock += 1;
        self.nodes.insert(
            hash,
            Node {
                parent: linked,
                born: self.clock,
                children: 0,
                stamp: self.clock,
            },
        );
        self.leaves.insert(self.clock, hash);
    }

    fn touched(&mut self, hash: SequenceHash) {
        self.restamp(hash);
    }

    fn removed(&mut self, hash: SequenceHash) {
        let Some(node) = self.nodes.remove(&hash) else {
            return;
        };
        if node.children == 0 {
            self.leaves.remove(&node.stamp);
        }
        if let Some((parent_hash, born)) = node.parent
            && let Some(parent) = self.nodes.get_mut(&parent_hash)
            && parent.born == born
        {
            parent.children -= 1;
            if parent.children == 0 {
                self.leaves.insert(parent.stamp, parent_hash);
            }
        }
    }

    fn victim(&mut self) -> Option<SequenceHash> {
        self.leaves.first_key_value().map(|(_, &hash)| hash)
    }
}

/// Whether a tier takes a block it is offered.
pub trait AdmissionFilter: Send + fmt::Debug {
    /// `hash` is offered; whether to store it.
    fn admit(&mut self, hash: SequenceHash) -> bool;
}

/// Every block is admitted.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdmitAll;

impl AdmissionFilter for AdmitAll {
    fn admit(&mut self, _hash: SequenceHash) -> bool {
        true
    }
}

/// A block is admitted the second time it is offered within the last `window` offers: a
/// frequency filter that keeps one-off prefixes off a disk. It remembers at most `window`
/// hashes, forgetting the older half when full.
#[derive(Debug)]
pub struct SeenTwice {
    window: usize,
    /// Offers counted in the current and the previous half-window.
    current: HashMap<SequenceHash, (), foldhash::fast::RandomState>,
    previous: HashMap<SequenceHash, (), foldhash::fast::RandomState>,
}

impl SeenTwice {
    /// A filter remembering about `window` recent offers (at least 2).
    pub fn new(window: usize) -> Self {
        SeenTwice {
            window: window.max(2),
            current: HashMap::default(),
            previous: HashMap::default(),
        }
    }
}

impl AdmissionFilter for SeenTwice {
    fn admit(&mut self, hash: SequenceHash) -> bool {
        if self.current.remove(&hash).is_some() || self.previous.remove(&hash).is_some() {
            return true;
        }
        if self.current.len() >= self.window / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(hash, ());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> SequenceHash {
        SequenceHash(n)
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::default();
        lru.inserted(h(1), None);
        lru.inserted(h(2), None);
        lru.touched(h(1));
        assert_eq!(lru.victim(), Some(h(2)));
        lru.removed(h(2));
        assert_eq!(lru.victim(), Some(h(1)));
        lru.removed(h(1));
        assert_eq!(lru.victim(), None);
    }

    #[test]
    fn leaves_go_before_their_parents_even_when_used_later() {
        let mut policy = LeavesFirst::default();
        policy.inserted(h(1), None);
        policy.inserted(h(2), Some(h(1)));
        policy.inserted(h(3), None);
        // The root was used last, but its child is a leaf: the child goes first.
        policy.touched(h(3));
        policy.touched(h(1));
        assert_eq!(policy.victim(), Some(h(2)));
        policy.removed(h(2));
        assert_eq!(policy.victim(), Some(h(3)));
        policy.removed(h(3));
        assert_eq!(policy.victim(), Some(h(1)));
    }

    #[test]
    fn seen_twice_admits_repeats_only() {
        let mut filter = SeenTwice::new(4);
        assert!(!filter.admit(h(1)));
        assert!(filter.admit(h(1)));
        assert!(!filter.admit(h(1)), "admission resets the count");
        assert!(!filter.admit(h(2)));
        assert!(!filter.admit(h(3)));
        assert!(!filter.admit(h(4)));
        assert!(!filter.admit(h(5)));
        assert!(!filter.admit(h(2)), "forgotten after the window");
    }
}
