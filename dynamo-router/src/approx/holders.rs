//! The workers predicted to hold each block, with a bit mask of those in the first 64 slots: a
//! query over at most 64 workers intersects blocks with one `and`.
//!
//! Most blocks have one holder (a request's own blocks), so a block's entry in the main map is 16
//! bytes: the mask and that holder inline. A block held by two workers or more is marked there
//! with the place of its holders' list, sorted by slot, in a slab of lists: reaching them is an
//! index, not a second hash probe. Expiry probes the main map once per block; its smaller
//! entries miss the cache less often.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use dynamo_core::SequenceHash;
use smallvec::SmallVec;

/// A worker predicted to hold a block, with the number of its latest touch of it, modulo
/// 2^32: touch numbers are only compared for equality with touches still in the worker's
/// queue, which holds far fewer than 2^32 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) slot: u32,
    pub(super) touch: u32,
}

/// What a touch did to its block's holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Touched {
    /// The worker was added.
    Added,
    /// The worker held the block already: its touch of this (short) number is no longer its
    /// latest.
    Again(u32),
}

/// A touch number as a holder keeps it.
pub(super) fn short(number: u64) -> u32 {
    number as u32
}

/// The bit of `slot` in a mask (0 from slot 64 on).
pub(super) fn bit(slot: u32) -> u64 {
    1u64.checked_shl(slot).unwrap_or(0)
}

/// The slot of a main entry whose holders are in a list (no worker's slot: the store keeps
/// fewer than 2^24 workers); the entry's touch is then the list's place in the slab.
const SHARED: u32 = u32::MAX;

/// A block's entry in the main map: its only holder, or [`SHARED`] and its list's place.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The bits of the holders in slots below 64.
    mask: u64,
    only: Holder,
}

type Map<V> = HashMap<SequenceHash, V, foldhash::fast::RandomState>;

/// The holders of a block held by two workers or more, sorted by slot.
type List = SmallVec<[Holder; 4]>;

/// The holders of every block.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    main: Map<Head>,
    /// The lists of the blocks held by two workers or more, at the places their main entries
    /// name; the places in `free` are unused (their lists empty, kept for reuse).
    lists: Vec<List>,
    free: Vec<u32>,
}

impl Blocks {
    /// The bits of `hash`'s holders in slots below 64; `None` when nobody holds it.
    pub(super) fn mask(&self, hash: &SequenceHash) -> Option<u64> {
        self.main.get(hash).map(|head| head.mask)
    }

    /// `hash`'s holders, sorted by slot; `None` when nobody holds it.
    pub(super) fn holders(&self, hash: &SequenceHash) -> Option<&[Holder]> {
        let head = self.main.get(hash)?;
        if head.only.slot == SHARED {
            self.lists
                .get(head.only.touch as usize)
                .map(|list| list.as_slice())
        } else {
            Some(std::slice::from_ref(&head.only))
        }
    }

    /// `holder.slot`'s holder of `hash`, if it holds it.
    pub(super) fn holder_mut(&mut self, hash: &SequenceHash, slot: u32) -> Option<&mut Holder> {
        let head = self.main.get_mut(hash)?;
        if head.only.slot == SHARED {
            let list = self.lists.get_mut(head.only.touch as usize)?;
            let i = find(head.mask, list, slot).ok()?;
            list.get_mut(i)
        } else {
            (head.only.slot == slot).then_some(&mut head.only)
        }
    }

    /// Set `holder` as its worker's latest touch of `hash`.
    pub(super) fn touch(&mut self, hash: SequenceHash, holder: Holder) -> Touched {
        let head = match self.main.entry(hash) {
            Entry::Vacant(free) => {
                free.insert(Head {
                    mask: bit(holder.slot),
                    only: holder,
                });
                return Touched::Added;
            }
            Entry::Occupied(held) => held.into_mut(),
        };
        if head.only.slot == holder.slot {
            let earlier = std::mem::replace(&mut head.only.touch, holder.touch);
            return Touched::Again(earlier);
        }
        if head.only.slot != SHARED {
            // A second holder: the block's holders move to a list.
            let place = self.free.pop().unwrap_or_else(|| {
                self.lists.push(List::new());
                (self.lists.len() - 1) as u32
            });
            if let Some(list) = self.lists.get_mut(place as usize) {
                list.clear();
                list.push(head.only);
            }
            head.only = Holder {
                slot: SHARED,
                touch: place,
            };
        }
        let Some(list) = self.lists.get_mut(head.only.touch as usize) else {
            return Touched::Added;
        };
        match find(head.mask, list, holder.slot) {
            Ok(i) => Touched::Again(std::mem::replace(&mut list[i].touch, holder.touch)),
            Err(i) => {
                list.insert(i, holder);
                head.mask |= bit(holder.slot);
                Touched::Added
            }
        }
    }

    /// Whether `touch` is `slot`'s latest touch of `hash`.
    pub(super) fn is_latest(&self, hash: &SequenceHash, slot: u32, touch: u32) -> bool {
        let Some(head) = self.main.get(hash) else {
            return false;
        };
        if head.only.slot != SHARED {
            return head.only == Holder { slot, touch };
        }
        self.lists
            .get(head.only.touch as usize)
            .is_some_and(|list| find(head.mask, list, slot).is_ok_and(|i| list[i].touch == touch))
    }

    /// If `touch` is `slot`'s latest touch of `hash`, take `slot` off the block (and the block
    /// off the map with its last holder); whether it was.
    pub(super) fn forget(&mut self, hash: SequenceHash, slot: u32, touch: u32) -> bool {
        let Entry::Occupied(mut held) = self.main.entry(hash) else {
            return false;
        };
        let head = held.get_mut();
        if head.only.slot != SHARED {
            if head.only.slot != slot || head.only.touch != touch {
                return false;
            }
            held.remove();
            return true;
        }
        let place = head.only.touch;
        let Some(list) = self.lists.get_mut(place as usize) else {
            return false;
        };
        let Ok(i) = find(head.mask, list, slot) else {
            return false;
        };
        if list[i].touch != touch {
            return false;
        }
        list.remove(i);
        head.mask &= !bit(slot);
        if list.len() <= 1 {
            // One holder left: back inline, and the list's place is free again.
            match list.first() {
                Some(&last) => head.only = last,
                None => {
                    held.remove();
                }
            }
            list.clear();
            self.free.push(place);
        }
        true
    }
}

/// Where `slot` is in `list` (sorted by slot, `mask` the bits of those below 64), or would go.
/// A slot below 64 is placed by counting the bits below its own, without reading the list.
fn find(mask: u64, list: &[Holder], slot: u32) -> Result<usize, usize> {
    let below = mask.count_ones() as usize;
    if slot < 64 {
        let index = (mask & (bit(slot) - 1)).count_ones() as usize;
        return if mask & bit(slot) != 0 {
            Ok(index)
        } else {
            Err(index)
        };
    }
    let rest = list.get(below..).unwrap_or_default();
    match rest.binary_search_by_key(&slot, |h| h.slot) {
        Ok(i) => Ok(below + i),
        Err(i) => Err(below + i),
    }
}
