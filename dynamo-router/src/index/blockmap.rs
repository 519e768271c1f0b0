//! Where each indexed block lives: a hash table whose buckets hold only the block's place.
//!
//! A bucket is a [`Loc`] (run and position, 8 bytes), not the pair of hash and place (16): the
//! key is the hash stored at that place in [`Runs`], which a probe compares against and a query
//! reads next anyway. Removals and moves name the place they expect, so they read no run. The
//! table is hashbrown's `HashTable`, the one std's `HashMap` is built on, with the same hasher.

use std::hash::BuildHasher;

use dynamo_core::SequenceHash;
use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, VacantEntry};

use super::runs::{Loc, Runs};

/// The place of every block the index holds, keyed by the block's sequence hash.
#[derive(Default)]
pub(crate) struct BlockMap {
    table: HashTable<Loc>,
    hasher: foldhash::fast::RandomState,
}

impl BlockMap {
    fn hash(&self, hash: SequenceHash) -> u64 {
        self.hasher.hash_one(hash)
    }

    /// The place of `hash`, if the index holds it.
    #[inline]
    pub(crate) fn get(&self, runs: &Runs, hash: SequenceHash) -> Option<Loc> {
        self.table
            .find(self.hash(hash), |&loc| runs.hash_at(loc) == hash)
            .copied()
    }

    /// The place of `hash` if the index holds it, else the map's room for it: one probe for a
    /// store that must both look a block up and, when no worker holds it, place it.
    #[inline]
    pub(crate) fn get_or_vacant(
        &mut self,
        runs: &Runs,
        hash: SequenceHash,
    ) -> Result<Loc, Vacant<'_>> {
        let hasher = &self.hasher;
        match self.table.entry(
            hasher.hash_one(hash),
            |&loc| runs.hash_at(loc) == hash,
            |&at| hasher.hash_one(runs.hash_at(at)),
        ) {
            Entry::Occupied(held) => Ok(*held.get()),
            Entry::Vacant(room) => Err(Vacant(room)),
        }
    }

    /// Forget `hash`, held at `loc` (nothing happens if it is held elsewhere or not at all).
    pub(crate) fn remove_at(&mut self, hash: SequenceHash, loc: Loc) {
        if let Ok(held) = self.table.find_entry(self.hash(hash), |&at| at == loc) {
            held.remove();
        }
    }

    /// `hash` moved from `from` to `to` (nothing happens if it was not held at `from`).
    pub(crate) fn relocate(&mut self, hash: SequenceHash, from: Loc, to: Loc) {
        if let Some(at) = self.table.find_mut(self.hash(hash), |&at| at == from) {
            *at = to;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Give memory back, keeping room for at least `min_capacity` blocks.
    pub(crate) fn shrink_to(&mut self, runs: &Runs, min_capacity: usize) {
        let hasher = &self.hasher;
        self.table
            .shrink_to(min_capacity, |&at| hasher.hash_one(runs.hash_at(at)));
    }
}

/// Room in the map for a block it does not hold, from [`BlockMap::get_or_vacant`].
pub(crate) struct Vacant<'a>(VacantEntry<'a, Loc>);

impl Vacant<'_> {
    /// Record the block at `loc`, a place that holds its hash.
    #[inline]
    pub(crate) fn insert(self, loc: Loc) {
        self.0.insert(loc);
    }
}

impl std::fmt::Debug for BlockMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockMap")
            .field("len", &self.len())
            .finish()
    }
}
