//! Which workers hold one block, in 8 bytes for up to two workers.
//!
//! A resident is a worker slot and the set of tiers the worker holds the block in, packed into
//! a `u32` (`slot << 4 | tier mask`). A block's residents are kept sorted by slot, so that an
//! overlap query intersects them with a merge. Up to two residents live inline in the map
//! value; more spill into a side table of lists, addressed by index.

use dynamo_core::StorageTier;

/// A packed (worker slot, tier mask) pair.
pub(crate) type Resident = u32;

/// The largest number of worker slots the packing can address.
pub(crate) const MAX_SLOTS: u32 = 1 << 24;

const TIER_BITS: u32 = 4;
const TIER_MASK: u32 = (1 << TIER_BITS) - 1;
/// Marks an unused inline position, or (in position 0) a spilled list.
const NONE: u32 = u32::MAX;

pub(crate) fn pack(slot: u32, tiers: u8) -> Resident {
    (slot << TIER_BITS) | (u32::from(tiers) & TIER_MASK)
}

pub(crate) fn slot_of(resident: Resident) -> u32 {
    resident >> TIER_BITS
}

pub(crate) fn tiers_of(resident: Resident) -> u8 {
    (resident & TIER_MASK) as u8
}

pub(crate) fn tier_bit(tier: StorageTier) -> u8 {
    match tier {
        StorageTier::Device => 1,
        StorageTier::Host => 2,
        StorageTier::Disk => 4,
        StorageTier::Remote => 8,
    }
}

/// The fastest tier in a non-empty tier mask.
pub(crate) fn fastest_tier(tiers: u8) -> StorageTier {
    match tiers.trailing_zeros() {
        0 => StorageTier::Device,
        1 => StorageTier::Host,
        2 => StorageTier::Disk,
        _ => StorageTier::Remote,
    }
}

/// The residents of one block: inline `[a, b]` (b may be `NONE`), or `[NONE, list index]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Residents([u32; 2]);

/// What a change did to a worker's residency of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The worker did not hold the block before, or no longer holds it after.
    Residency,
    /// Only the worker's tiers for the block changed.
    Tiers,
    /// Nothing changed.
    None,
}

/// The lists of blocks with more than two residents.
#[derive(Debug, Default)]
pub(crate) struct SpillTable {
    lists: Vec<Vec<Resident>>,
    free: Vec<u32>,
}

impl SpillTable {
    fn allocate(&mut self, list: Vec<Resident>) -> u32 {
        match self.free.pop() {
            Some(index) => {
                self.lists[index as usize] = list;
                index
            }
            None => {
                self.lists.push(list);
                (self.lists.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, index: u32) -> Vec<Resident> {
        self.free.push(index);
        std::mem::take(&mut self.lists[index as usize])
    }

    /// Heap bytes held by the spilled lists.
    pub(crate) fn heap_bytes(&self) -> usize {
        let headers = self.lists.capacity() * std::mem::size_of::<Vec<Resident>>();
        let items: usize = self
            .lists
            .iter()
            .map(|l| l.capacity() * std::mem::size_of::<Resident>())
            .sum();
        headers + items + self.free.capacity() * 4
    }
}

impl Residents {
    /// One resident.
    pub(crate) fn single(resident: Resident) -> Self {
        Residents([resident, NONE])
    }

    /// The residents, sorted by slot.
    pub(crate) fn as_slice<'a>(&'a self, spill: &'a SpillTable) -> &'a [Resident] {
        match self.0 {
            [NONE, index] if index != NONE => &spill.lists[index as usize],
            [_, NONE] => &self.0[..1],
            _ => &self.0,
        }
    }

    /// Add `tiers` to `slot`'s residency.
    pub(crate) fn insert(&mut self, slot: u32, tiers: u8, spill: &mut SpillTable) -> Change {
        match self.0 {
            [NONE, index] if index != NONE => {
                insert_sorted(&mut spill.lists[index as usize], slot, tiers)
            }
            [a, NONE] if slot_of(a) == slot => merge_tiers(&mut self.0[0], tiers),
            [a, NONE] => {
                let new = pack(slot, tiers);
                self.0 = if slot_of(a) < slot {
                    [a, new]
                } else {
                    [new, a]
                };
                Change::Residency
            }
            [a, _] if slot_of(a) == slot => merge_tiers(&mut self.0[0], tiers),
            [_, b] if slot_of(b) == slot => merge_tiers(&mut self.0[1], tiers),
            [a, b] => {
                let mut list = Vec::with_capacity(4);
                list.extend([a, b]);
                insert_sorted(&mut list, slot, tiers);
                self.0 = [NONE, spill.allocate(list)];
                Change::Residency
            }
        }
    }

    /// Remove `tiers` from `slot`'s residency; the slot leaves when no tier is left.
    pub(crate) fn remove(&mut self, slot: u32, tiers: u8, spill: &mut SpillTable) -> Change {
        let change = match self.0 {
            [NONE, index] if index != NONE => {
                remove_sorted(&mut spill.lists[index as usize], slot, tiers)
            }
            [a, b] => {
                let i = if slot_of(a) == slot {
                    0
                } else if b != NONE && slot_of(b) == slot {
                    1
                } else {
                    return Change::None;
                };
                let before = tiers_of(self.0[i]);
                let after = before & !tiers;
                return if after == before {
                    Change::None
                } else if after == 0 {
                    // Keep the survivor in position 0.
                    self.0 = if i == 0 { [b, NONE] } else { [a, NONE] };
                    Change::Residency
                } else {
                    self.0[i] = pack(slot, after);
                    Change::Tiers
                };
            }
        };
        // Shrink a spilled list that fits inline again.
        if let [NONE, index] = self.0
            && index != NONE
            && spill.lists[index as usize].len() <= 2
        {
            let list = spill.release(index);
            self.0 = [
                list.first().copied().unwrap_or(NONE),
                list.get(1).copied().unwrap_or(NONE),
            ];
        }
        change
    }

    /// Whether no worker holds the block any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.0[0] == NONE && self.0[1] == NONE
    }

    /// The tiers `slot` holds the block in (0: none).
    pub(crate) fn tiers(&self, slot: u32, spill: &SpillTable) -> u8 {
        let residents = self.as_slice(spill);
        residents
            .binary_search_by_key(&slot, |&r| slot_of(r))
            .map_or(0, |i| tiers_of(residents[i]))
    }
}

fn merge_tiers(resident: &mut Resident, tiers: u8) -> Change {
    let before = *resident;
    *resident |= u32::from(tiers) & TIER_MASK;
    if *resident == before {
        Change::None
    } else {
        Change::Tiers
    }
}

fn insert_sorted(list: &mut Vec<Resident>, slot: u32, tiers: u8) -> Change {
    // Workers that join a hot block in slot order (round-robin, or a fleet warming up) append.
    if list.last().is_none_or(|&last| slot_of(last) < slot) {
        list.push(pack(slot, tiers));
        return Change::Residency;
    }
    match list.binary_search_by_key(&slot, |&r| slot_of(r)) {
        Ok(i) => merge_tiers(&mut list[i], tiers),
        Err(i) => {
            list.insert(i, pack(slot, tiers));
            Change::Residency
        }
    }
}

fn remove_sorted(list: &mut Vec<Resident>, slot: u32, tiers: u8) -> Change {
    let Ok(i) = list.binary_search_by_key(&slot, |&r| slot_of(r)) else {
        return Change::None;
    };
    let before = tiers_of(list[i]);
    let after = before & !tiers;
    if after == before {
        Change::None
    } else if after == 0 {
        list.remove(i);
        Change::Residency
    } else {
        list[i] = pack(slot, after);
        Change::Tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(r: &Residents, spill: &SpillTable) -> Vec<u32> {
        r.as_slice(spill).iter().map(|&x| slot_of(x)).collect()
    }

    #[test]
    fn grows_inline_then_spills_then_shrinks_back() {
        let mut spill = SpillTable::default();
        let mut r = Residents::single(pack(5, 1));
        assert_eq!(r.insert(2, 1, &mut spill), Change::Residency);
        assert_eq!(slots(&r, &spill), [2, 5]);
        assert_eq!(r.insert(9, 2, &mut spill), Change::Residency);
        assert_eq!(r.insert(3, 1, &mut spill), Change::Residency);
        assert_eq!(slots(&r, &spill), [2, 3, 5, 9]);
        assert_eq!(r.insert(3, 1, &mut spill), Change::None);
        assert_eq!(r.insert(3, 2, &mut spill), Change::Tiers);
        assert_eq!(r.tiers(3, &spill), 3);
        assert_eq!(r.remove(3, 3, &mut spill), Change::Residency);
        assert_eq!(r.remove(9, 1, &mut spill), Change::None);
        assert_eq!(r.remove(9, 2, &mut spill), Change::Residency);
        assert_eq!(slots(&r, &spill), [2, 5]);
        assert_eq!(
            spill.free.len(),
            1,
            "the list was released when it fit inline"
        );
        assert_eq!(r.remove(2, 1, &mut spill), Change::Residency);
        assert_eq!(r.remove(5, 1, &mut spill), Change::Residency);
        assert!(r.is_empty());
    }

    #[test]
    fn fastest_tier_prefers_device() {
        assert_eq!(fastest_tier(0b1010), StorageTier::Host);
        assert_eq!(fastest_tier(0b0001), StorageTier::Device);
        assert_eq!(fastest_tier(0b1000), StorageTier::Remote);
    }
}
