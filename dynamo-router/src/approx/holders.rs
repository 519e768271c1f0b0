//! The workers predicted to hold one block, sorted by slot, with a bit mask of those in the
//! first 64 slots: a query over at most 64 workers intersects blocks with one `and`.

use smallvec::SmallVec;

/// A worker predicted to hold a block, with the number of its latest touch of it, modulo
/// 2^32: touch numbers are only compared for equality with touches still in the worker's
/// queue, which holds far fewer than 2^32 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) slot: u32,
    pub(super) touch: u32,
}

/// A touch number as a holder keeps it.
pub(super) fn short(number: u64) -> u32 {
    number as u32
}

/// The bit of `slot` in a mask (0 from slot 64 on).
pub(super) fn bit(slot: u32) -> u64 {
    1u64.checked_shl(slot).unwrap_or(0)
}

/// A block's holders; two fit without a heap list.
#[derive(Debug, Clone)]
pub(super) struct Holders {
    /// The bits of the holders in slots below 64.
    mask: u64,
    list: SmallVec<[Holder; 2]>,
}

impl Holders {
    pub(super) fn one(holder: Holder) -> Self {
        Holders {
            mask: bit(holder.slot),
            list: SmallVec::from_elem(holder, 1),
        }
    }

    /// The bits of the holders in slots below 64.
    pub(super) fn mask(&self) -> u64 {
        self.mask
    }

    pub(super) fn as_slice(&self) -> &[Holder] {
        &self.list
    }

    /// Where `slot` is, or would go.
    pub(super) fn find(&self, slot: u32) -> Result<usize, usize> {
        self.list.binary_search_by_key(&slot, |h| h.slot)
    }

    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut Holder> {
        let i = self.find(slot).ok()?;
        self.list.get_mut(i)
    }

    /// Add `holder` at `at` (from [`find`](Self::find)).
    pub(super) fn insert(&mut self, at: usize, holder: Holder) {
        self.mask |= bit(holder.slot);
        self.list.insert(at, holder);
    }

    /// Take the holder at `at` off.
    pub(super) fn remove(&mut self, at: usize) {
        let gone = self.list.remove(at);
        self.mask &= !bit(gone.slot);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
