//! Sequence hash → slab slot, in one flat array.
//!
//! The pool's hottest work is registering a block and evicting one: an insert and a removal in
//! a table as large as the cache, touched at random. A general hash map spends two cache misses
//! on each (control bytes, then the bucket). Here an entry is one `u64` — the low 32 bits of
//! the hash (which are also where the entry belongs) beside the slot — so a probe usually costs
//! one miss. Probing is linear. A removal leaves a tombstone, which the next insert along the
//! same run reuses, unless the run ends right after it: then the place and the tombstones
//! before it become empty. (Shifting the run back instead costs a branch misprediction per
//! moved entry, and evictions are as frequent as inserts.) When entries and tombstones
//! together fill half the table, it is rebuilt, twice as large if the entries alone fill a
//! quarter: nothing outside refers to a place, so entries may move.
//!
//! Two hashes may share their low 32 bits, so a lookup confirms a match against the slab, which
//! the caller reads next anyway.

use dynamo_core::SequenceHash;

use super::BlockId as Slot;

/// An empty place: probes stop here.
const EMPTY: u64 = 0;
/// A removed entry: probes go on past it. Entries never have a low half of 0.
const TOMBSTONE: u64 = 1 << 32;
/// The smallest table.
const MIN_PLACES: usize = 64;

#[derive(Debug)]
pub(super) struct SlotTable {
    /// `tag << 32 | (slot + 1)`, [`EMPTY`] or [`TOMBSTONE`].
    places: Vec<u64>,
    len: usize,
    tombstones: usize,
}

fn tag(hash: SequenceHash) -> u64 {
    hash.0 & 0xffff_ffff
}

fn entry(hash: SequenceHash, slot: Slot) -> u64 {
    tag(hash) << 32 | (u64::from(slot) + 1)
}

/// Whether a place holds an entry (neither empty nor a tombstone).
fn is_entry(place: u64) -> bool {
    place & 0xffff_ffff != 0
}

fn slot_of(entry: u64) -> Slot {
    // Entries hold `slot + 1` in their low half, so this never underflows.
    ((entry & 0xffff_ffff) - 1) as Slot
}

impl SlotTable {
    /// A table sized for `expected` entries, and as many removals, without rebuilding.
    pub(super) fn with_capacity(expected: usize) -> Self {
        SlotTable {
            places: vec![EMPTY; Self::places_for(expected)],
            len: 0,
            tombstones: 0,
        }
    }

    /// Room for `entries` at a quarter of the places.
    fn places_for(entries: usize) -> usize {
        entries
            .saturating_mul(4)
            .next_power_of_two()
            .max(MIN_PLACES)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.places.len() - 1
    }

    fn home(&self, entry: u64) -> usize {
        (entry >> 32) as usize & self.mask()
    }

    /// The slot of `hash`, if present; `hash_at(slot)` reads a slot's full hash.
    pub(super) fn get(
        &self,
        hash: SequenceHash,
        hash_at: impl Fn(Slot) -> SequenceHash,
    ) -> Option<Slot> {
        let wanted = tag(hash);
        let mut place = self.home(wanted << 32);
        loop {
            let found = self.places[place];
            if found == EMPTY {
                return None;
            }
            if found >> 32 == wanted && is_entry(found) && hash_at(slot_of(found)) == hash {
                return Some(slot_of(found));
            }
            place = (place + 1) & self.mask();
        }
    }

    /// Read the place where a probe for `hash` starts, bringing it into cache; the value is
    /// meaningless (the pool's `warm` reads many at once).
    pub(super) fn touch(&self, hash: SequenceHash) -> u64 {
        self.places[self.home(tag(hash) << 32)]
    }

    /// Add `hash` at `slot`; the caller knows it is absent.
    pub(super) fn insert(&mut self, hash: SequenceHash, slot: Slot) {
        if (self.len + self.tombstones + 1) * 2 > self.places.len() {
            self.rebuild(Self::places_for(self.len + 1).max(self.places.len()));
        }
        if self.place(entry(hash, slot)) == TOMBSTONE {
            self.tombstones -= 1;
        }
        self.len += 1;
    }

    /// Put `entry` in the first free place of its run; what that place held.
    fn place(&mut self, entry: u64) -> u64 {
        let mut place = self.home(entry);
        while is_entry(self.places[place]) {
            place = (place + 1) & self.mask();
        }
        std::mem::replace(&mut self.places[place], entry)
    }

    /// Place every entry anew in a table of `places`, without tombstones.
    fn rebuild(&mut self, places: usize) {
        let old = std::mem::replace(&mut self.places, vec![EMPTY; places]);
        self.tombstones = 0;
        for entry in old.into_iter().filter(|&place| is_entry(place)) {
            self.place(entry);
        }
    }

    /// Remove `hash`, known to be at `slot`.
    pub(super) fn remove(&mut self, hash: SequenceHash, slot: Slot) {
        let wanted = entry(hash, slot);
        let mask = self.mask();
        let mut place = self.home(wanted);
        loop {
            match self.places[place] {
                EMPTY => return,
                found if found == wanted => break,
                _ => place = (place + 1) & mask,
            }
        }
        self.len -= 1;
        if self.places[(place + 1) & mask] != EMPTY {
            self.places[place] = TOMBSTONE;
            self.tombstones += 1;
            return;
        }
        // The run ends here: no probe needs this place, nor the tombstones just before it.
        self.places[place] = EMPTY;
        let mut previous = place.wrapping_sub(1) & mask;
        while self.places[previous] == TOMBSTONE {
            self.places[previous] = EMPTY;
            self.tombstones -= 1;
            previous = previous.wrapping_sub(1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(usize),
        Get(u64),
    }

    /// Hashes from a small set, some sharing their low 32 bits, so that runs and tag
    /// collisions are common.
    fn hash() -> impl Strategy<Value = u64> {
        (0u64..48, 0u64..3).prop_map(|(low, high)| (high << 40) | (low * 0x9e37) & 0x3ff)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            hash().prop_map(Op::Insert),
            any::<usize>().prop_map(Op::Remove),
            hash().prop_map(Op::Get),
        ]
    }

    proptest! {
        /// The table answers like a map, whatever the order of inserts and removals.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec(op(), 0..400)) {
            let mut table = SlotTable::with_capacity(4);
            let mut model: HashMap<u64, Slot> = HashMap::new();
            let mut hashes: Vec<SequenceHash> = Vec::new();
            let mut next_slot: Slot = 0;
            for op in ops {
                match op {
                    Op::Insert(h) if !model.contains_key(&h) => {
                        table.insert(SequenceHash(h), next_slot);
                        model.insert(h, next_slot);
                        hashes.push(SequenceHash(h));
                        next_slot += 1;
                    }
                    Op::Remove(i) if !hashes.is_empty() => {
                        let hash = hashes.swap_remove(i % hashes.len());
                        let slot = model.remove(&hash.0).expect("in the model");
                        table.remove(hash, slot);
                    }
                    Op::Get(h) => {
                        let slots: HashMap<Slot, u64> = model.iter().map(|(h, s)| (*s, *h)).collect();
                        let found = table.get(SequenceHash(h), |slot| SequenceHash(slots[&slot]));
                        prop_assert_eq!(found, model.get(&h).copied());
                    }
                    _ => {}
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let slots: HashMap<Slot, u64> = model.iter().map(|(h, s)| (*s, *h)).collect();
            for (h, slot) in &model {
                prop_assert_eq!(table.get(SequenceHash(*h), |s| SequenceHash(slots[&s])), Some(*slot));
            }
        }
    }
}
