//! [`Landed`]: the blocks one NIXL READ brought, as a read-only [`BlockStore`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dynamo_core::{SequenceHash, StorageTier};
use parking_lot::Mutex;

use crate::{BlockStore, Error, NixlRegion};

const TIER: StorageTier = StorageTier::Host;

/// Landing room taken from a shared count of blocks, given back on drop.
#[derive(Debug)]
pub(crate) struct Room {
    used: Arc<AtomicUsize>,
    blocks: usize,
}

impl Room {
    /// Up to `wanted` blocks of the `capacity` that `used` counts: how many it got.
    pub(crate) fn take(used: &Arc<AtomicUsize>, capacity: usize, wanted: usize) -> Room {
        let mut blocks = 0;
        let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            blocks = wanted.min(capacity.saturating_sub(now));
            Some(now + blocks)
        });
        Room {
            used: used.clone(),
            blocks,
        }
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.used.fetch_sub(self.blocks, Ordering::AcqRel);
    }
}

/// Registered landing regions no fetch holds, kept for the next ones (registering and
/// faulting in fresh memory for every fetch costs more than the READ).
#[derive(Debug)]
pub(crate) struct Spare {
    regions: Mutex<Vec<NixlRegion>>,
    /// The most bytes kept.
    limit: usize,
}

impl Spare {
    pub(crate) fn new(limit: usize) -> Self {
        Spare {
            regions: Mutex::new(Vec::new()),
            limit,
        }
    }

    /// A kept region of at least `bytes`, the smallest such.
    pub(crate) fn take(&self, bytes: usize) -> Option<NixlRegion> {
        let mut regions = self.regions.lock();
        let best = (regions.iter().enumerate())
            .filter(|(_, region)| region.len() >= bytes)
            .min_by_key(|(_, region)| region.len())
            .map(|(at, _)| at)?;
        Some(regions.swap_remove(best))
    }

    /// Keep `region` for later, dropping the largest kept ones past the limit.
    pub(crate) fn keep(&self, region: NixlRegion) {
        let mut regions = self.regions.lock();
        regions.push(region);
        regions.sort_by_key(NixlRegion::len);
        while regions.iter().map(NixlRegion::len).sum::<usize>() > self.limit {
            regions.pop();
        }
    }
}

/// Blocks read into one registered region, in the order of `hashes`; read-only. The region
/// goes back to `spare` on drop.
#[derive(Debug)]
pub(crate) struct Landed {
    /// `None` when no block landed.
    pub(crate) region: Option<NixlRegion>,
    pub(crate) hashes: Vec<SequenceHash>,
    pub(crate) block_bytes: usize,
    pub(crate) spare: Arc<Spare>,
    pub(crate) _room: Room,
}

impl Drop for Landed {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            self.spare.keep(region);
        }
    }
}

impl Landed {
    fn block(&self, hash: SequenceHash) -> Option<&[u8]> {
        let at = self.hashes.iter().position(|h| *h == hash)?;
        self.region
            .as_ref()?
            .as_slice()
            .get(at * self.block_bytes..(at + 1) * self.block_bytes)
    }
}

impl BlockStore for Landed {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn capacity(&self) -> usize {
        self.hashes.len()
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.hashes.contains(&hash)
    }

    /// Always [`Error::ReadOnly`].
    fn put(&self, _hash: SequenceHash, _block: &[u8]) -> Result<(), Error> {
        Err(Error::ReadOnly { tier: TIER })
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        if into.len() != self.block_bytes {
            return Err(Error::BlockSize {
                tier: TIER,
                expected: self.block_bytes,
                got: into.len(),
            });
        }
        Ok(self
            .block(hash)
            .map(|block| into.copy_from_slice(block))
            .is_some())
    }

    /// Always [`Error::ReadOnly`].
    fn remove(&self, _hash: SequenceHash) -> Result<bool, Error> {
        Err(Error::ReadOnly { tier: TIER })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_takes_what_fits_and_gives_it_back_on_drop() {
        let used = Arc::new(AtomicUsize::new(0));
        let first = Room::take(&used, 5, 3);
        let second = Room::take(&used, 5, 4);
        assert_eq!((first.blocks(), second.blocks()), (3, 2));
        assert_eq!(Room::take(&used, 5, 1).blocks(), 0, "full");
        drop(first);
        assert_eq!(used.load(Ordering::Acquire), 2);
        assert_eq!(Room::take(&used, 5, 9).blocks(), 3);
        drop(second);
        assert_eq!(used.load(Ordering::Acquire), 0);
    }
}
