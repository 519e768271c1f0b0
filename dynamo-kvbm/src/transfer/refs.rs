//! [`RefCounts`]: which blocks a bounded store holds for how many transfers.

use std::collections::{HashMap, HashSet};

use dynamo_core::SequenceHash;

/// How many transfers hold each block of a store of `capacity` blocks.
///
/// Plain bookkeeping, no bytes: its callers put a block into their store when
/// [`acquire`](Self::acquire) says it is new and remove it when [`release`](Self::release) says
/// nothing holds it any more. A hash listed twice in one transfer is held twice.
#[derive(Debug)]
pub(crate) struct RefCounts {
    capacity: usize,
    counts: HashMap<SequenceHash, u32>,
}

impl RefCounts {
    pub(crate) fn new(capacity: usize) -> Self {
        RefCounts {
            capacity,
            counts: HashMap::with_capacity(capacity),
        }
    }

    /// How many distinct blocks can be held.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many distinct blocks are held.
    pub(crate) fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether some transfer holds `hash`.
    pub(crate) fn contains(&self, hash: SequenceHash) -> bool {
        self.counts.contains_key(&hash)
    }

    /// How many leading `hashes` could be acquired without going past the capacity.
    pub(crate) fn fitting(&self, hashes: &[SequenceHash]) -> usize {
        let room = self.capacity.saturating_sub(self.counts.len());
        let mut new = HashSet::new();
        for (i, hash) in hashes.iter().enumerate() {
            if !self.counts.contains_key(hash) && new.insert(*hash) && new.len() > room {
                return i;
            }
        }
        hashes.len()
    }

    /// Hold every one of `hashes` once more; the ones no transfer held before, each once, in
    /// order. The caller checked that they fit ([`fitting`](Self::fitting)).
    pub(crate) fn acquire(&mut self, hashes: &[SequenceHash]) -> Vec<usize> {
        let mut new = Vec::new();
        for (i, hash) in hashes.iter().enumerate() {
            let count = self.counts.entry(*hash).or_insert(0);
            if *count == 0 {
                new.push(i);
            }
            *count += 1;
        }
        debug_assert!(self.counts.len() <= self.capacity);
        new
    }

    /// Hold every one of `hashes` once less; the ones nothing holds any more.
    pub(crate) fn release(&mut self, hashes: &[SequenceHash]) -> Vec<SequenceHash> {
        let mut freed = Vec::new();
        for hash in hashes {
            if let Some(count) = self.counts.get_mut(hash) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(hash);
                    freed.push(*hash);
                }
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(ids: &[u64]) -> Vec<SequenceHash> {
        ids.iter().copied().map(SequenceHash).collect()
    }

    #[test]
    fn shared_blocks_count_once_against_the_capacity() {
        let mut refs = RefCounts::new(3);
        assert_eq!(refs.acquire(&hashes(&[1, 2])), [0, 1]);
        assert_eq!(refs.fitting(&hashes(&[1, 2, 3, 4])), 3);
        assert_eq!(
            refs.fitting(&hashes(&[3, 3, 1])),
            3,
            "a repeat is one block"
        );
        assert_eq!(refs.acquire(&hashes(&[1, 2, 3])), [2]);
        assert_eq!(refs.release(&hashes(&[1, 2])), []);
        assert_eq!(refs.release(&hashes(&[1, 2, 3])), hashes(&[1, 2, 3]));
        assert_eq!(refs.len(), 0);
    }
}
