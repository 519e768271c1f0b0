//! [`BlockStore`]: fixed-size KV blocks keyed by sequence hash, in one storage tier.

use std::fmt;

use dynamo_core::{SequenceHash, StorageTier};

use crate::Error;

/// Fixed-size KV blocks keyed by the sequence hash of their prefix, held in one storage tier.
///
/// A store is a place, not a policy: it keeps what it is given until told to remove it, and
/// says [`Error::Full`] when it has no room. Which block to drop and where evicted blocks go is
/// the cache hierarchy's decision.
///
/// Calls may block on I/O (a disk or a remote object store): call them from a thread that may
/// block, never from an async task directly. Every method takes `&self`, so one store can be
/// shared between the engine that onboards from it and the thread that offloads into it.
pub trait BlockStore: Send + Sync + fmt::Debug {
    /// The tier this store's blocks live in.
    fn tier(&self) -> StorageTier;

    /// The size of every block, in bytes.
    fn block_bytes(&self) -> usize;

    /// How many blocks the store can hold.
    fn capacity(&self) -> usize;

    /// How many blocks it holds now.
    fn len(&self) -> usize;

    /// Whether it holds no block.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it holds the block of `hash`.
    fn contains(&self, hash: SequenceHash) -> bool;

    /// Keep `block` under `hash`. Putting a hash the store already holds keeps the old bytes
    /// (a block's content is a function of its hash) and succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::BlockSize`] when `block` is not [`block_bytes`](Self::block_bytes) long,
    /// [`Error::Full`] when there is no room, [`Error::Io`] when the medium fails.
    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error>;

    /// Copy the block of `hash` into `into`; `false` when the store does not hold it.
    ///
    /// # Errors
    ///
    /// [`Error::BlockSize`] when `into` is not [`block_bytes`](Self::block_bytes) long,
    /// [`Error::Io`] when the medium fails.
    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error>;

    /// Forget the block of `hash`, freeing its room; `false` when the store did not hold it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the medium fails.
    fn remove(&self, hash: SequenceHash) -> Result<bool, Error>;

    /// [`put`](Self::put) several blocks; a store that can batch its I/O overrides this.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put); blocks before the failing one are stored.
    fn put_many(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), Error> {
        blocks
            .iter()
            .try_for_each(|&(hash, block)| self.put(hash, block))
    }

    /// [`get`](Self::get) several blocks into consecutive [`block_bytes`](Self::block_bytes)
    /// chunks of `into`; for each, whether the store held it. A store that can batch its I/O
    /// overrides this.
    ///
    /// # Errors
    ///
    /// [`Error::BlockSize`] when `into` is not `hashes.len()` blocks long, or as
    /// [`get`](Self::get).
    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        let size = self.block_bytes();
        if into.len() != hashes.len() * size {
            return Err(Error::BlockSize {
                tier: self.tier(),
                expected: hashes.len() * size,
                got: into.len(),
            });
        }
        hashes
            .iter()
            .zip(into.chunks_exact_mut(size.max(1)))
            .map(|(&hash, chunk)| self.get(hash, chunk))
            .collect()
    }
}
