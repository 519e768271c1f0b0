//! [`Landing`]: the bounded host store a decode worker pulls remote blocks into.

use std::fmt;
use std::sync::Arc;

use dynamo_core::SequenceHash;
use parking_lot::Mutex;

use super::refs::RefCounts;
use crate::{BlockStore, Error, HostStore};

/// A host store shared by the transfers in flight, each holding its blocks through a
/// [`Reservation`]: room is taken before the bytes arrive and given back when the reservation
/// is dropped, so a cancelled pull leaves nothing behind.
pub(crate) struct Landing {
    store: Arc<HostStore>,
    refs: Mutex<RefCounts>,
}

impl Landing {
    pub(crate) fn new(block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        Ok(Landing {
            store: Arc::new(HostStore::new(block_bytes, capacity)?),
            refs: Mutex::new(RefCounts::new(capacity)),
        })
    }

    pub(crate) fn store(&self) -> Arc<HostStore> {
        self.store.clone()
    }

    /// How many distinct blocks are reserved.
    pub(crate) fn reserved(&self) -> usize {
        self.refs.lock().len()
    }

    /// Room for the leading `hashes` that fit (maybe none).
    pub(crate) fn reserve(self: &Arc<Self>, hashes: &[SequenceHash]) -> Reservation {
        let mut refs = self.refs.lock();
        let fit = &hashes[..refs.fitting(hashes)];
        refs.acquire(fit);
        Reservation {
            landing: self.clone(),
            hashes: fit.to_vec(),
        }
    }

    /// Give back one hold on each of `hashes`; remove the blocks nobody holds any more.
    fn release(&self, hashes: &[SequenceHash]) {
        let mut refs = self.refs.lock();
        // Removed under the lock, so a new reservation of the same hash puts after this.
        for hash in refs.release(hashes) {
            // A host store's removal cannot fail; a block never written is simply not there.
            let _ = self.store.remove(hash);
        }
    }
}

impl fmt::Debug for Landing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Landing")
            .field("store", &self.store)
            .field("reserved", &self.reserved())
            .finish()
    }
}

/// Room in a [`Landing`] for some leading blocks of one transfer, given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    landing: Arc<Landing>,
    hashes: Vec<SequenceHash>,
}

impl Reservation {
    pub(crate) fn hashes(&self) -> &[SequenceHash] {
        &self.hashes
    }

    /// Keep only the first `len` blocks.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.hashes.len() {
            self.landing.release(&self.hashes[len..]);
            self.hashes.truncate(len);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.landing.release(&self.hashes);
    }
}
