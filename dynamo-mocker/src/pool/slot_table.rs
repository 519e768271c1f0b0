//! Sequence hash → slab slot, in one flat array.
//!
//! The pool's hottest work is registering a block and evicting one: an insert and a removal in
//! a table as large as the cache, touched at random. A general hash map spends two cache misses
//! on each (control bytes, then the bucket). Here an entry is one `u64` — the low 32 bits of
//! the hash (which are also where the entry belongs) beside the slot — so a probe usually costs
//! one miss. Linear probing at a load of at most one half keeps runs short, and removal shifts
//! the run back instead of leaving tombstones.
//!
//! Two hashes may share their low 32 bits, so a lookup confirms a match against the slab, which
//! the caller reads next anyway.

use dynamo_core::SequenceHash;

use super::Slot;

/// An empty place.
const EMPTY: u64 = 0;
/// The smallest table.
const MIN_PLACES: usize = 64;

#[derive(Debug)]
pub(super) struct SlotTable {
    /// `tag << 32 | (slot + 1)`, or [`EMPTY`].
    places: Vec<u64>,
    len: usize,
}

fn tag(hash: SequenceHash) -> u64 {
    hash.0 & 0xffff_ffff
}

fn entry(hash: SequenceHash, slot: Slot) -> u64 {
    tag(hash) << 32 | (u64::from(slot) + 1)
}

fn slot_of(entry: u64) -> Slot {
    // Entries hold `slot + 1` in their low half, so this never underflows.
    ((entry & 0xffff_ffff) - 1) as Slot
}

impl SlotTable {
    /// A table sized for `expected` entries without growing.
    pub(super) fn with_capacity(expected: usize) -> Self {
        let places = (expected.saturating_mul(2))
            .next_power_of_two()
            .max(MIN_PLACES);
        SlotTable {
            places: vec![EMPTY; places],
            len: 0,
        }
    }

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
            if found >> 32 == wanted && hash_at(slot_of(found)) == hash {
                return Some(slot_of(found));
            }
            place = (place + 1) & self.mask();
        }
    }

    /// Read the place where a probe for `hash` starts, bringing it into cache; the value is
    /// meaningless. See [`KvPool::warm`](super::KvPool).
    pub(super) fn touch(&self, hash: SequenceHash) -> u64 {
        self.places[self.home(tag(hash) << 32)]
    }

    /// Add `hash` at `slot`; the caller knows it is absent.
    pub(super) fn insert(&mut self, hash: SequenceHash, slot: Slot) {
        if (self.len + 1) * 2 > self.places.len() {
            self.grow();
        }
        self.place(entry(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, entry: u64) {
        let mut place = self.home(entry);
        while self.places[place] != EMPTY {
            place = (place + 1) & self.mask();
        }
        self.places[place] = entry;
    }

    fn grow(&mut self) {
        let doubled = vec![EMPTY; self.places.len() * 2];
        let old = std::mem::replace(&mut self.places, doubled);
        for entry in old.into_iter().filter(|&entry| entry != EMPTY) {
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
        // Shift the rest of the run back over the hole, so that no lookup stops early.
        let mut hole = place;
        let mut next = (hole + 1) & mask;
        loop {
            let moving = self.places[next];
            if moving == EMPTY {
                break;
            }
            let home = self.home(moving);
            // `moving` may fill the hole unless its home lies cyclically in (hole, next].
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.places[hole] = moving;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.places[hole] = EMPTY;
        self.len -= 1;
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
