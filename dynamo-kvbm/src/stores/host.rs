//! [`HostStore`]: blocks in one slab of host memory (tier G2).

use std::collections::HashMap;
use std::fmt;

use dynamo_core::{SequenceHash, StorageTier};
use parking_lot::RwLock;

use super::{check_shape, check_size};
use crate::{BlockStore, Error};

const TIER: StorageTier = StorageTier::Host;

/// Blocks in host memory: one slab of `capacity × block_bytes` bytes allocated when the store is
/// made, a map from hash to slot, and a list of free slots.
///
/// Nothing is allocated per block: a put takes a free slot and copies the block in, a get copies
/// it out, a remove gives the slot back. The slab is zeroed lazily by the operating system, so a
/// large store costs memory only as its slots are first written.
///
/// One reader-writer lock guards the store: gets (and [`get_many`](BlockStore::get_many)) copy
/// out side by side; a put or remove waits for them and runs alone. A batch takes the lock once.
///
/// ```
/// use dynamo_core::SequenceHash;
/// use dynamo_kvbm::{BlockStore, HostStore};
///
/// let store = HostStore::new(4096, 2)?;
/// store.put(SequenceHash(7), &[1; 4096])?;
///
/// let mut block = vec![0; 4096];
/// assert!(store.get(SequenceHash(7), &mut block)?);
/// assert_eq!(block, [1; 4096]);
/// assert!(!store.get(SequenceHash(8), &mut block)?);
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct HostStore {
    block_bytes: usize,
    capacity: usize,
    inner: RwLock<Slab>,
}

/// The slab and its bookkeeping, under the store's lock.
struct Slab {
    bytes: Vec<u8>,
    slots: HashMap<SequenceHash, usize>,
    free: Vec<usize>,
}

impl HostStore {
    /// A store of `capacity` blocks of `block_bytes` bytes each.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `block_bytes` is zero or the slab would not fit the address space.
    pub fn new(block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        let slab_bytes = check_shape(TIER, block_bytes, capacity)?;
        // Slots are handed out lowest first, so a small working set stays in few pages.
        let free = (0..capacity).rev().collect();
        Ok(HostStore {
            block_bytes,
            capacity,
            inner: RwLock::new(Slab {
                bytes: vec![0; slab_bytes],
                slots: HashMap::with_capacity(capacity),
                free,
            }),
        })
    }

    /// The byte range of `slot` in the slab.
    fn range(&self, slot: usize) -> std::ops::Range<usize> {
        slot * self.block_bytes..(slot + 1) * self.block_bytes
    }

    /// Put under an already taken write lock.
    fn put_locked(&self, slab: &mut Slab, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        check_size(TIER, self.block_bytes, block.len())?;
        if slab.slots.contains_key(&hash) {
            return Ok(());
        }
        let slot = slab.free.pop().ok_or(Error::Full {
            tier: TIER,
            capacity: self.capacity,
        })?;
        let range = self.range(slot);
        slab.bytes[range].copy_from_slice(block);
        slab.slots.insert(hash, slot);
        Ok(())
    }

    /// Get under an already taken read lock.
    fn get_locked(&self, slab: &Slab, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        check_size(TIER, self.block_bytes, into.len())?;
        let Some(&slot) = slab.slots.get(&hash) else {
            return Ok(false);
        };
        into.copy_from_slice(&slab.bytes[self.range(slot)]);
        Ok(true)
    }
}

impl BlockStore for HostStore {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.inner.read().slots.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.inner.read().slots.contains_key(&hash)
    }

    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        self.put_locked(&mut self.inner.write(), hash, block)
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        self.get_locked(&self.inner.read(), hash, into)
    }

    fn remove(&self, hash: SequenceHash) -> Result<bool, Error> {
        let mut slab = self.inner.write();
        let Some(slot) = slab.slots.remove(&hash) else {
            return Ok(false);
        };
        slab.free.push(slot);
        Ok(true)
    }

    fn put_many(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), Error> {
        let mut slab = self.inner.write();
        blocks
            .iter()
            .try_for_each(|&(hash, block)| self.put_locked(&mut slab, hash, block))
    }

    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        check_size(TIER, hashes.len() * self.block_bytes, into.len())?;
        let slab = self.inner.read();
        hashes
            .iter()
            .zip(into.chunks_exact_mut(self.block_bytes))
            .map(|(&hash, chunk)| self.get_locked(&slab, hash, chunk))
            .collect()
    }
}

impl fmt::Debug for HostStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostStore")
            .field("block_bytes", &self.block_bytes)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}
