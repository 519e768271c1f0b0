//! [`Shelf`]: reference-counted blocks in shared buffers, for the exports and the landing store.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use dynamo_core::{SequenceHash, StorageTier};
use parking_lot::{Mutex, MutexGuard};

use super::refs::RefCounts;
use crate::{BlockStore, Error};

const TIER: StorageTier = StorageTier::Host;

/// At most `capacity` distinct blocks, each in a buffer of its own that a reader can hold on to
/// ([`Bytes`]) while it copies or sends it, with the transfers holding each counted.
///
/// Buffers of blocks nobody holds any more are kept for the next blocks (at most `capacity` of
/// them), so a steady flow of transfers allocates nothing. A buffer still held by a reader when
/// its block leaves is freed when the reader drops it.
#[derive(Debug)]
pub(crate) struct Shelf {
    block_bytes: usize,
    refs: RefCounts,
    blocks: HashMap<SequenceHash, Bytes>,
    spare: Vec<BytesMut>,
}

impl Shelf {
    pub(crate) fn new(block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        if block_bytes == 0 || block_bytes.checked_mul(capacity).is_none() {
            return Err(Error::Config {
                tier: TIER,
                reason: format!("{capacity} blocks of {block_bytes} bytes"),
            });
        }
        Ok(Shelf {
            block_bytes,
            refs: RefCounts::new(capacity),
            blocks: HashMap::with_capacity(capacity),
            spare: Vec::new(),
        })
    }

    pub(crate) fn refs(&self) -> &RefCounts {
        &self.refs
    }

    pub(crate) fn capacity(&self) -> usize {
        self.refs.capacity()
    }

    /// Blocks on the shelf (held blocks whose bytes have arrived).
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn contains(&self, hash: SequenceHash) -> bool {
        self.blocks.contains_key(&hash)
    }

    /// Hold the leading `hashes` that fit, once each more; how many, and the positions among
    /// them of the blocks no transfer held before.
    pub(crate) fn acquire(&mut self, hashes: &[SequenceHash]) -> (usize, Vec<usize>) {
        let fit = self.refs.fitting(hashes);
        (fit, self.refs.acquire(&hashes[..fit]))
    }

    /// Hold `hashes` once less; blocks nobody holds leave the shelf.
    pub(crate) fn release(&mut self, hashes: &[SequenceHash]) {
        for hash in self.refs.release(hashes) {
            if let Some(block) = self.blocks.remove(&hash) {
                self.recycle(block);
            }
        }
    }

    /// A buffer of one block's length, contents unspecified.
    pub(crate) fn buffer(&mut self) -> BytesMut {
        self.spare
            .pop()
            .unwrap_or_else(|| BytesMut::zeroed(self.block_bytes))
    }

    /// Put the bytes of a held block on the shelf; a block already there keeps its bytes (they
    /// are a function of its hash), and a block no longer held is not kept.
    pub(crate) fn place(&mut self, hash: SequenceHash, block: Bytes) {
        if self.refs.contains(hash) && !self.blocks.contains_key(&hash) {
            self.blocks.insert(hash, block);
        } else {
            self.recycle(block);
        }
    }

    /// The block of `hash`, shared.
    pub(crate) fn get(&self, hash: SequenceHash) -> Option<Bytes> {
        self.blocks.get(&hash).cloned()
    }

    fn recycle(&mut self, block: Bytes) {
        if let Ok(buffer) = block.try_into_mut()
            && buffer.len() == self.block_bytes
            && self.spare.len() < self.refs.capacity()
        {
            self.spare.push(buffer);
        }
    }
}

/// A [`Shelf`] behind a lock, read as a [`BlockStore`]: the exports and the landing store as a
/// decode worker reads them. Blocks come and go through the shelf, never through the store's
/// `put` and `remove` ([`Error::ReadOnly`]).
pub(crate) struct ShelfStore {
    block_bytes: usize,
    shelf: Mutex<Shelf>,
    read: AtomicU64,
}

impl ShelfStore {
    pub(crate) fn new(block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        Ok(ShelfStore {
            block_bytes,
            shelf: Mutex::new(Shelf::new(block_bytes, capacity)?),
            read: AtomicU64::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shelf> {
        self.shelf.lock()
    }

    /// Blocks read out so far, through the store or counted by [`count_read`](Self::count_read).
    pub(crate) fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The leading `hashes` on the shelf, shared (no copy), counted as read.
    pub(crate) fn leading(&self, hashes: &[SequenceHash]) -> Vec<Bytes> {
        let blocks: Vec<Bytes> = {
            let shelf = self.lock();
            hashes.iter().map_while(|hash| shelf.get(*hash)).collect()
        };
        self.count_read(blocks.len());
        blocks
    }

    pub(crate) fn count_read(&self, blocks: usize) {
        self.read.fetch_add(blocks as u64, Ordering::Relaxed);
    }

    /// [`Error::BlockSize`] unless `bytes` is `blocks` blocks long.
    pub(crate) fn check_span(&self, blocks: usize, bytes: usize) -> Result<(), Error> {
        let expected = blocks.saturating_mul(self.block_bytes);
        if bytes == expected {
            Ok(())
        } else {
            Err(Error::BlockSize {
                tier: TIER,
                expected,
                got: bytes,
            })
        }
    }
}

impl BlockStore for ShelfStore {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.lock().contains(hash)
    }

    /// Always [`Error::ReadOnly`].
    fn put(&self, _hash: SequenceHash, _block: &[u8]) -> Result<(), Error> {
        Err(Error::ReadOnly { tier: TIER })
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        Ok(self.get_many(&[hash], into)?.contains(&true))
    }

    /// Always [`Error::ReadOnly`].
    fn remove(&self, _hash: SequenceHash) -> Result<bool, Error> {
        Err(Error::ReadOnly { tier: TIER })
    }

    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        self.check_span(hashes.len(), into.len())?;
        let blocks: Vec<Option<Bytes>> = {
            let shelf = self.lock();
            hashes.iter().map(|hash| shelf.get(*hash)).collect()
        };
        // Copied outside the lock: a shared buffer outlives its block's leaving.
        let found: Vec<bool> = blocks
            .iter()
            .zip(into.chunks_exact_mut(self.block_bytes))
            .map(|(block, chunk)| {
                block
                    .as_ref()
                    .map(|block| chunk.copy_from_slice(block))
                    .is_some()
            })
            .collect();
        self.count_read(found.iter().filter(|found| **found).count());
        Ok(found)
    }
}

impl fmt::Debug for ShelfStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shelf = self.lock();
        f.debug_struct("ShelfStore")
            .field("block_bytes", &self.block_bytes)
            .field("capacity", &shelf.capacity())
            .field("held", &shelf.refs().len())
            .field("len", &shelf.len())
            .finish()
    }
}
