//! Blocks in the order they were last routed, with O(1) touch and eviction.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Instant;

use dynamo_core::SequenceHash;

/// The end of the list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: SequenceHash,
    routed_at: Instant,
    older: u32,
    newer: u32,
}

/// One worker's predicted blocks, least recently routed first: a doubly linked list over a
/// slab, indexed by hash.
#[derive(Debug, Default)]
pub(super) struct Recency {
    slot_of: HashMap<SequenceHash, u32, foldhash::fast::RandomState>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    oldest: Option<u32>,
    newest: Option<u32>,
}

impl Recency {
    pub(super) fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Record that `hash` was routed at `at`: it becomes the most recent.
    pub(super) fn touch(&mut self, hash: SequenceHash, at: Instant) {
        let node = Node {
            hash,
            routed_at: at,
            older: NIL,
            newer: NIL,
        };
        let slot = match self.slot_of.entry(hash) {
            Entry::Occupied(held) => {
                let slot = *held.get();
                self.unlink(slot);
                self.nodes[slot as usize].routed_at = at;
                slot
            }
            Entry::Vacant(free) => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.nodes[slot as usize] = node;
                        slot
                    }
                    None => {
                        self.nodes.push(node);
                        (self.nodes.len() - 1) as u32
                    }
                };
                free.insert(slot);
                slot
            }
        };
        self.link_newest(slot);
    }

    /// The least recently routed block and when it was routed.
    pub(super) fn oldest(&self) -> Option<(SequenceHash, Instant)> {
        let node = &self.nodes[self.oldest? as usize];
        Some((node.hash, node.routed_at))
    }

    /// Forget the least recently routed block.
    pub(super) fn pop_oldest(&mut self) -> Option<SequenceHash> {
        let slot = self.oldest?;
        self.unlink(slot);
        let hash = self.nodes[slot as usize].hash;
        self.slot_of.remove(&hash);
        self.free.push(slot);
        Some(hash)
    }

    fn unlink(&mut self, slot: u32) {
        let Node { older, newer, .. } = self.nodes[slot as usize];
        match older {
            NIL => self.oldest = (newer != NIL).then_some(newer),
            older => self.nodes[older as usize].newer = newer,
        }
        match newer {
            NIL => self.newest = (older != NIL).then_some(older),
            newer => self.nodes[newer as usize].older = older,
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let newest = self.newest.unwrap_or(NIL);
        let node = &mut self.nodes[slot as usize];
        node.older = newest;
        node.newer = NIL;
        match self.newest {
            Some(newest) => self.nodes[newest as usize].newer = slot,
            None => self.oldest = Some(slot),
        }
        self.newest = Some(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_moves_a_block_to_the_newest_end() {
        let mut recency = Recency::default();
        let t0 = Instant::now();
        for id in 1..=3 {
            recency.touch(SequenceHash(id), t0);
        }
        recency.touch(SequenceHash(1), t0 + std::time::Duration::from_secs(1));
        assert_eq!(recency.len(), 3);
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(2)));
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(3)));
        assert_eq!(recency.oldest().map(|(h, _)| h), Some(SequenceHash(1)));
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(1)));
        assert_eq!(recency.pop_oldest(), None);
        recency.touch(SequenceHash(9), t0);
        assert_eq!(recency.oldest().map(|(h, _)| h), Some(SequenceHash(9)));
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_list_ordered_by_last_touch(ops in proptest::collection::vec((0u64..8, proptest::bool::weighted(0.25)), 1..200)) {
            let mut recency = Recency::default();
            let mut model: std::collections::VecDeque<u64> = Default::default();
            let t0 = Instant::now();
            for (step, (id, pop)) in ops.into_iter().enumerate() {
                if pop {
                    proptest::prop_assert_eq!(recency.pop_oldest().map(|h| h.0), model.pop_front());
                } else {
                    let at = t0 + std::time::Duration::from_millis(step as u64);
                    recency.touch(SequenceHash(id), at);
                    model.retain(|&m| m != id);
                    model.push_back(id);
                }
                proptest::prop_assert_eq!(recency.len(), model.len());
                proptest::prop_assert_eq!(recency.oldest().map(|(h, _)| h.0), model.front().copied());
            }
        }
    }
}
