//! The main map of the predictions: from a block's hash to its holder, 16 bytes a place, in one
//! array with linear probing.
//!
//! A look-up reads the places from the block's home on, usually one cache line, where a
//! general-purpose map reads a line of control bytes and then the bucket's line. A removal
//! shifts the later places of its run back into the hole, so no tombstones build up under the
//! steady inserts and removals of recording and expiry. The table is at most half full.
//!
//! A request's blocks are mostly new to the map (its own blocks) and far apart in it, each a
//! cache miss: [`Table::read_ahead`] reads all their homes in one pass without branching on
//! what it reads, so that the misses overlap instead of coming one after another.

use std::hash::BuildHasher;

use dynamo_core::SequenceHash;

use super::holders::Holder;

/// The slot of an empty place: no worker's (the store keeps fewer than 2^24 workers) and not
/// the mark of a shared block either (`u32::MAX`).
const VACANT: u32 = u32::MAX - 1;

/// The places of a new table.
const FIRST_PLACES: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Place {
    key: SequenceHash,
    value: Holder,
}

impl Place {
    const EMPTY: Place = Place {
        key: SequenceHash(0),
        value: Holder {
            slot: VACANT,
            touch: 0,
        },
    };

    fn is_vacant(&self) -> bool {
        self.value.slot == VACANT
    }
}

/// A map from a block's hash to one [`Holder`] (whose slot is never `u32::MAX - 1`).
#[derive(Debug, Default)]
pub(super) struct Table {
    /// Empty, or a power of two of places.
    places: Vec<Place>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl Table {
    /// The place where `key`'s probe starts; `places` must not be empty.
    fn home(&self, key: SequenceHash) -> usize {
        (self.hasher.hash_one(key.0) as usize) & (self.places.len() - 1)
    }

    /// Where `key` is.
    pub(super) fn find(&self, key: SequenceHash) -> Option<usize> {
        if self.places.is_empty() {
            return None;
        }
        let mask = self.places.len() - 1;
        let mut at = self.home(key);
        loop {
            let place = self.places.get(at)?;
            if place.is_vacant() {
                return None;
            }
            if place.key == key {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// Where `key` is (`Ok`), or the vacant place where it would go (`Err`); the table grows
    /// first if one more key would make it more than half full.
    #[inline]
    pub(super) fn find_or_vacant(&mut self, key: SequenceHash) -> Result<usize, usize> {
        if (self.len + 1) * 2 > self.places.len() {
            self.grow();
        }
        let mask = self.places.len() - 1;
        let mut at = self.home(key);
        loop {
            let Some(place) = self.places.get(at) else {
                // Not reached: `at` is masked to the table's size.
                return Err(at & mask);
            };
            if place.is_vacant() {
                return Err(at);
            }
            if place.key == key {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The holder at `at`, a place [`find`](Self::find) returned since the last change.
    pub(super) fn get(&self, at: usize) -> Option<&Holder> {
        self.places
            .get(at)
            .filter(|place| !place.is_vacant())
            .map(|place| &place.value)
    }

    /// The holder at `at`, a place found since the last change.
    pub(super) fn get_mut(&mut self, at: usize) -> Option<&mut Holder> {
        self.places
            .get_mut(at)
            .filter(|place| !place.is_vacant())
            .map(|place| &mut place.value)
    }

    /// Put `key` and `value` in the vacant place `at` that
    /// [`find_or_vacant`](Self::find_or_vacant) just returned.
    pub(super) fn fill(&mut self, at: usize, key: SequenceHash, value: Holder) {
        if let Some(place) = self.places.get_mut(at) {
            debug_assert!(place.is_vacant());
            *place = Place { key, value };
            self.len += 1;
        }
    }

    /// Remove the key at `at`, a place found since the last change: the later places of its
    /// run that may move back into the hole do.
    pub(super) fn remove(&mut self, at: usize) {
        let Some(place) = self.places.get(at) else {
            return;
        };
        if place.is_vacant() {
            return;
        }
        let mask = self.places.len() - 1;
        let mut hole = at;
        let mut next = (at + 1) & mask;
        while let Some(&place) = self.places.get(next).filter(|place| !place.is_vacant()) {
            // The place's probe runs from its home to `next`; if the hole is on that way,
            // the key may move back into it and still be found.
            let home = self.home(place.key);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.places[hole] = place;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.places[hole] = Place::EMPTY;
        self.len -= 1;
    }

    /// Keep only the keys whose holder `keep` accepts, in place and in one pass. The pass
    /// starts just after a vacant place, so that no run crosses its start, and reads each place
    /// once: a rejected key leaves its place vacant, and a kept key that a vacated place now
    /// precedes in its run moves back to the first vacant place from its home (never past where
    /// it was, so that the places ahead of the pass are as they were). A key is hashed only if
    /// it may move.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Holder) -> bool) {
        let size = self.places.len();
        let Some(start) = self.places.iter().position(Place::is_vacant) else {
            return;
        };
        let mask = size - 1;
        // Whether a place of the run being read has been vacated: until one is, the kept
        // keys stay where they are.
        let mut vacated = false;
        for step in 1..size {
            let at = (start + step) & mask;
            let place = self.places[at];
            if place.is_vacant() {
                vacated = false;
                continue;
            }
            if !keep(&place.value) {
                self.places[at] = Place::EMPTY;
                self.len -= 1;
                vacated = true;
                continue;
            }
            if vacated {
                self.places[at] = Place::EMPTY;
                let mut to = self.home(place.key);
                while !self.places[to].is_vacant() {
                    to = (to + 1) & mask;
                }
                self.places[to] = place;
            }
        }
    }

    /// Whether `more` keys fit without the table going over half full.
    pub(super) fn has_room(&self, more: usize) -> bool {
        (self.len + more) * 2 <= self.places.len()
    }

    /// Room for `more` keys with the table at most a quarter full: if they do not fit, the
    /// places are doubled until they do and every key is placed again.
    pub(super) fn reserve(&mut self, more: usize) {
        let mut size = self.places.len().max(FIRST_PLACES);
        while (self.len + more) * 4 > size {
            size *= 2;
        }
        if size != self.places.len() {
            self.resize(size);
        }
    }

    /// Read the home place of every key, so that the look-ups that follow find their lines in
    /// the cache: the reads do not depend on each other nor branch on what they find, so the
    /// processor overlaps their misses.
    pub(super) fn read_ahead(&self, keys: impl Iterator<Item = SequenceHash>) {
        if self.places.is_empty() {
            return;
        }
        let mut seen = 0u64;
        for key in keys {
            if let Some(place) = self.places.get(self.home(key)) {
                seen ^= place.key.0;
            }
        }
        std::hint::black_box(seen);
    }

    /// Twice the places (16 at first), every key placed again.
    fn grow(&mut self) {
        self.resize((self.places.len() * 2).max(FIRST_PLACES));
    }

    /// `size` places (a power of two, room for every key), every key placed again.
    fn resize(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.places, vec![Place::EMPTY; size]);
        self.len = 0;
        for place in old.into_iter().filter(|place| !place.is_vacant()) {
            self.place(place);
        }
    }

    /// Put `place` in the first vacant place from its home (its key not in the table).
    fn place(&mut self, place: Place) {
        let mask = self.places.len() - 1;
        let mut at = self.home(place.key);
        while !self.places[at].is_vacant() {
            at = (at + 1) & mask;
        }
        self.places[at] = place;
        self.len += 1;
    }

    /// The keys held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn holder(touch: u32) -> Holder {
        Holder { slot: 1, touch }
    }

    proptest! {
        /// Inserts, updates and removals agree with a `HashMap`; with few places, runs
        /// collide and wrap around, and every removal shifts them.
        #[test]
        fn table_agrees_with_a_map(ops in prop::collection::vec((0u64..48, any::<bool>()), 1..400)) {
            let mut table = Table::default();
            let mut model: HashMap<u64, u32> = HashMap::new();
            for (i, (key, insert)) in ops.into_iter().enumerate() {
                let touch = i as u32;
                if insert {
                    match table.find_or_vacant(SequenceHash(key)) {
                        Ok(at) => {
                            let value = table.get_mut(at).expect("found");
                            prop_assert_eq!(model.insert(key, touch), Some(value.touch));
                            value.touch = touch;
                        }
                        Err(at) => {
                            prop_assert_eq!(model.insert(key, touch), None);
                            table.fill(at, SequenceHash(key), holder(touch));
                        }
                    }
                } else {
                    match table.find(SequenceHash(key)) {
                        Some(at) => {
                            let value = *table.get(at).expect("found");
                            prop_assert_eq!(model.remove(&key), Some(value.touch));
                            table.remove(at);
                        }
                        None => prop_assert_eq!(model.remove(&key), None),
                    }
                }
                if i % 7 == 6 {
                    // Drop the keys with odd touches, as a sweep of dead holders does.
                    table.retain(|h| h.touch % 2 == 0);
                    model.retain(|_, touch| *touch % 2 == 0);
                } else if i % 5 == 4 {
                    // Another cut, then room for a few more keys, as the store makes when
                    // the table fills: the kept keys are placed again if it grows.
                    table.retain(|h| h.touch % 3 != 0);
                    model.retain(|_, touch| *touch % 3 != 0);
                    table.reserve(i % 3);
                    prop_assert!((table.len() + i % 3) * 4 <= table.places.len());
                }
                prop_assert_eq!(table.len(), model.len());
                table.read_ahead((0..48).map(SequenceHash));
                for probe in 0..48 {
                    let found = table
                        .find(SequenceHash(probe))
                        .and_then(|at| table.get(at))
                        .map(|h| h.touch);
                    prop_assert_eq!(found, model.get(&probe).copied());
                }
            }
        }
    }
}
