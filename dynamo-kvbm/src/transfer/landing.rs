//! [`Landing`]: the bounded store a decode worker pulls remote blocks into.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dynamo_core::SequenceHash;

use super::shelf::ShelfStore;
use crate::Error;

/// Host memory shared by the pulls in flight, each holding its blocks through a
/// [`Reservation`]: room is taken before the bytes arrive and given back when the reservation
/// is dropped, so a cancelled pull leaves nothing behind. Bytes are read from the socket
/// straight into a block's buffer.
#[derive(Debug)]
pub(crate) struct Landing {
    store: Arc<ShelfStore>,
}

impl Landing {
    pub(crate) fn new(block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        Ok(Landing {
            store: Arc::new(ShelfStore::new(block_bytes, capacity)?),
        })
    }

    /// The landed blocks, to read.
    pub(crate) fn store(&self) -> Arc<ShelfStore> {
        self.store.clone()
    }

    /// How many distinct blocks are reserved.
    pub(crate) fn reserved(&self) -> usize {
        self.store.lock().refs().len()
    }

    /// Room for the leading `hashes` that fit (maybe none).
    pub(crate) fn reserve(self: &Arc<Self>, hashes: &[SequenceHash]) -> Reservation {
        let (fit, _) = self.store.lock().acquire(hashes);
        Reservation {
            landing: self.clone(),
            hashes: hashes[..fit].to_vec(),
        }
    }

    /// A buffer to read one block into.
    pub(crate) fn buffer(&self) -> BytesMut {
        self.store.lock().buffer()
    }

    /// Keep the bytes of a reserved block.
    pub(crate) fn place(&self, hash: SequenceHash, block: Bytes) {
        self.store.lock().place(hash, block);
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
            self.landing.store.lock().release(&self.hashes[len..]);
            self.hashes.truncate(len);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.landing.store.lock().release(&self.hashes);
    }
}
