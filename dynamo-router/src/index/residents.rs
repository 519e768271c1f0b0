//! Which workers hold one block, in 8 bytes for up to two workers.
//!
//! A resident is a worker slot and the set of tiers the worker holds the block in, packed into
//! a `u32` (`slot << 4 | tier mask`). A block's residents are kept sorted by slot, so that an
//! overlap query intersects them with a merge. Up to two residents live inline in the map
//! value; more spill into one arena of chunks, addressed by offset: a chunk's length and its
//! residents sit side by side, so reading a spilled list costs one memory access, not two.

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

pub(crate) const fn tier_bit(tier: StorageTier) -> u8 {
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

/// The resident lists of blocks with more than two residents, in one arena.
///
/// A chunk of class `c` is `4 << c` words: a header (`class << 24 | length`) and room for
/// `(4 << c) - 1` residents. A list that outgrows its chunk moves to a chunk of the next class;
/// freed chunks are reused by class.
#[derive(Debug, Default)]
pub(crate) struct SpillTable {
    arena: Vec<u32>,
    free: Vec<Vec<u32>>,
}

const LENGTH_BITS: u32 = 24;
const LENGTH_MASK: u32 = (1 << LENGTH_BITS) - 1;

fn chunk_words(class: u32) -> usize {
    4 << class
}

impl SpillTable {
    fn header(&self, chunk: u32) -> (u32, usize) {
        let header = self.arena[chunk as usize];
        (header >> LENGTH_BITS, (header & LENGTH_MASK) as usize)
    }

    fn set_length(&mut self, chunk: u32, class: u32, length: usize) {
        self.arena[chunk as usize] = (class << LENGTH_BITS) | length as u32;
    }

    /// The residents of a chunk.
    fn list(&self, chunk: u32) -> &[Resident] {
        let (_, length) = self.header(chunk);
        let start = chunk as usize + 1;
        &self.arena[start..start + length]
    }

    fn list_mut(&mut self, chunk: u32) -> &mut [Resident] {
        let (_, length) = self.header(chunk);
        let start = chunk as usize + 1;
        &mut self.arena[start..start + length]
    }

    /// A chunk of `class` holding `residents`.
    fn allocate(&mut self, class: u32, residents: &[Resident]) -> u32 {
        let chunk = match self.free.get_mut(class as usize).and_then(Vec::pop) {
            Some(chunk) => chunk,
            None => {
                let chunk = self.arena.len();
                self.arena.resize(chunk + chunk_words(class), NONE);
                chunk as u32
            }
        };
        let start = chunk as usize + 1;
        self.arena[start..start + residents.len()].copy_from_slice(residents);
        self.set_length(chunk, class, residents.len());
        chunk
    }

    fn release(&mut self, chunk: u32) {
        let (class, _) = self.header(chunk);
        if self.free.len() <= class as usize {
            self.free.resize_with(class as usize + 1, Vec::new);
        }
        self.free[class as usize].push(chunk);
    }

    /// Add `tiers` to `slot` in the list at `chunk`, moving it to a larger chunk when full.
    fn insert(&mut self, chunk: &mut u32, slot: u32, tiers: u8) -> Change {
        let list = self.list(*chunk);
        let at = if list.last().is_none_or(|&last| slot_of(last) < slot) {
            // Workers that join a hot block in slot order append.
            list.len()
        } else {
            match list.binary_search_by_key(&slot, |&r| slot_of(r)) {
                Ok(i) => return merge_tiers(&mut self.list_mut(*chunk)[i], tiers),
                Err(i) => i,
            }
        };
        let (class, length) = self.header(*chunk);
        if length + 1 < chunk_words(class) {
            let start = *chunk as usize + 1;
            self.arena
                .copy_within(start + at..start + length, start + at + 1);
            self.arena[start + at] = pack(slot, tiers);
            self.set_length(*chunk, class, length + 1);
        } else {
            let mut grown = Vec::with_capacity(length + 1);
            grown.extend_from_slice(&list_of(&self.arena, *chunk, length)[..at]);
            grown.push(pack(slot, tiers));
            grown.extend_from_slice(&list_of(&self.arena, *chunk, length)[at..]);
            self.release(*chunk);
            *chunk = self.allocate(class + 1, &grown);
        }
        Change::Residency
    }

    /// Remove `tiers` from `slot` in the list at `chunk`.
    fn remove(&mut self, chunk: u32, slot: u32, tiers: u8) -> Change {
        let Ok(i) = self
            .list(chunk)
            .binary_search_by_key(&slot, |&r| slot_of(r))
        else {
            return Change::None;
        };
        let resident = &mut self.list_mut(chunk)[i];
        let before = tiers_of(*resident);
        let after = before & !tiers;
        if after == before {
            Change::None
        } else if after != 0 {
            *resident = pack(slot, after);
            Change::Tiers
        } else {
            let (class, length) = self.header(chunk);
            let start = chunk as usize + 1;
            self.arena
                .copy_within(start + i + 1..start + length, start + i);
            self.set_length(chunk, class, length - 1);
            Change::Residency
        }
    }

    /// Heap bytes held by the arena.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity() * 4
            + self.free.iter().map(|f| f.capacity() * 4).sum::<usize>()
            + self.free.capacity() * std::mem::size_of::<Vec<u32>>()
    }
}

fn list_of(arena: &[u32], chunk: u32, length: usize) -> &[Resident] {
    let start = chunk as usize + 1;
    &arena[start..start + length]
}

impl Residents {
    /// No resident.
    pub(crate) const EMPTY: Residents = Residents([NONE, NONE]);

    /// One resident.
    #[cfg(test)]
    pub(crate) fn single(resident: Resident) -> Self {
        Residents([resident, NONE])
    }

    /// The residents, sorted by slot.
    pub(crate) fn as_slice<'a>(&'a self, spill: &'a SpillTable) -> &'a [Resident] {
        match self.0 {
            [NONE, NONE] => &[],
            [NONE, chunk] => spill.list(chunk),
            [_, NONE] => &self.0[..1],
            _ => &self.0,
        }
    }

    /// Whether `self` and `other` name the same residents with the same tiers. A list is inline
    /// exactly when it has at most two residents (a shorter spilled list is brought back), so
    /// two inline lists compare as two words and an inline one never equals a spilled one.
    pub(crate) fn same(&self, other: &Residents, spill: &SpillTable) -> bool {
        match (self.0, other.0) {
            ([NONE, a], [NONE, b]) if a != NONE && b != NONE => {
                let (a, b) = (spill.list(a), spill.list(b));
                // Element by element: the lists are short, and a call to memcmp cost more.
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (a, b) => a == b,
        }
    }

    /// Add `tiers` to `slot`'s residency.
    pub(crate) fn insert(&mut self, slot: u32, tiers: u8, spill: &mut SpillTable) -> Change {
        match self.0 {
            [NONE, mut chunk] if chunk != NONE => {
                let change = spill.insert(&mut chunk, slot, tiers);
                self.0[1] = chunk;
                change
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
                let new = pack(slot, tiers);
                let list = if slot < slot_of(a) {
                    [new, a, b]
                } else if slot < slot_of(b) {
                    [a, new, b]
                } else {
                    [a, b, new]
                };
                self.0 = [NONE, spill.allocate(0, &list)];
                Change::Residency
            }
        }
    }

    /// Remove `tiers` from `slot`'s residency; the slot leaves when no tier is left.
    pub(crate) fn remove(&mut self, slot: u32, tiers: u8, spill: &mut SpillTable) -> Change {
        let change = match self.0 {
            [NONE, chunk] if chunk != NONE => spill.remove(chunk, slot, tiers),
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
        // Bring a spilled list that fits inline again back inline.
        if let [NONE, chunk] = self.0
            && chunk != NONE
            && spill.list(chunk).len() <= 2
        {
            let list = spill.list(chunk);
            self.0 = [
                list.first().copied().unwrap_or(NONE),
                list.get(1).copied().unwrap_or(NONE),
            ];
            spill.release(chunk);
        }
        change
    }

    /// The same residents, with a spilled list of their own.
    pub(crate) fn duplicate(&self, spill: &mut SpillTable) -> Residents {
        match self.0 {
            [NONE, chunk] if chunk != NONE => {
                let list: smallvec::SmallVec<[Resident; 16]> =
                    smallvec::SmallVec::from_slice(spill.list(chunk));
                let class = (0..).find(|&c| chunk_words(c) > list.len()).unwrap_or(0);
                Residents([NONE, spill.allocate(class, &list)])
            }
            _ => *self,
        }
    }

    /// The first word of a spilled list (its header), or 0 for inline residents.
    pub(crate) fn peek(&self, spill: &SpillTable) -> u32 {
        match self.0 {
            [NONE, chunk] if chunk != NONE => spill.arena[chunk as usize],
            _ => 0,
        }
    }

    /// Give a spilled list's chunk back to the arena.
    pub(crate) fn release(self, spill: &mut SpillTable) {
        if let [NONE, chunk] = self.0
            && chunk != NONE
        {
            spill.release(chunk);
        }
    }

    /// Whether no worker holds the block any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.0[0] == NONE && self.0[1] == NONE
    }

    /// The tiers `slot` holds the block in (0: none).
    #[cfg(test)]
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
        // The 3-resident chunk was freed when the list grew to 4, the 7-resident chunk when it
        // fit inline again.
        assert_eq!(spill.free.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
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
