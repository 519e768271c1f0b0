//! [`KvExports`]: a prefill worker's outbox of KV blocks, waiting for decode workers to pull.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::shelf::ShelfStore;
use crate::{BlockStore, Error};

/// A prefill worker's outbox: copies of the KV blocks it handed over, kept in host memory (a
/// buffer per block, reused) until the decode worker releases them or their lease runs out.
///
/// [`offer`](Self::offer) copies a prompt's blocks in and names them with a transfer id
/// ([`offer_with`](Self::offer_with) lets the caller write each block straight into its buffer
/// here, from its own KV memory);
/// [`read`](Self::read) copies them out (the block server does, for a decode worker in another
/// process); [`release`](Self::release) ends the transfer. Blocks are kept once per sequence
/// hash and counted per transfer: two transfers of the same prefix share its blocks, and a block
/// leaves when no transfer holds it.
///
/// An in-process decode worker reads the exports themselves as a [`BlockStore`]
/// ([`store`](Self::store), which [`LocalExports`](super::LocalExports) hands out), and
/// [`Fetched::read_each`](super::Fetched::read_each) lends it each block in place: one copy,
/// from here into its KV memory. The block server sends the blocks from here with no copy. As
/// a store, the exports can be read but not written ([`Error::ReadOnly`]).
///
/// # Bounds, and what happens when full
///
/// The exports hold at most `capacity_blocks` distinct blocks and as many transfers. A transfer
/// not released within its `lease` expires; expired transfers are dropped on every
/// [`offer`](Self::offer) and [`read`](Self::read), and by [`expire`](Self::expire). When an
/// offer does not fit, the oldest transfers are dropped until it does; when it does not fit
/// even alone, only its leading blocks that fit are kept, and [`Offered::blocks`] says which. A
/// decode worker that then pulls a dropped transfer gets [`Error::UnknownTransfer`] or fewer
/// blocks, and computes the rest itself.
///
/// ```
/// use std::time::Duration;
///
/// use dynamo_core::{SequenceHash, WorkerId};
/// use dynamo_kvbm::KvExports;
///
/// let exports = KvExports::new(4, 2, Duration::from_secs(30))?;
/// let prompt = [SequenceHash(1), SequenceHash(2), SequenceHash(3)];
/// let offered = exports.offer(&prompt, &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])?;
/// assert_eq!(offered.blocks, prompt[..2], "room for two blocks");
///
/// let mut bytes = [0; 8];
/// assert_eq!(exports.read(offered.transfer, &offered.blocks, &mut bytes)?, 2);
/// assert_eq!(bytes, [1, 1, 1, 1, 2, 2, 2, 2]);
/// let handoff = offered.handoff(WorkerId::new(1), None);
/// assert_eq!(exports.len(), 2);
/// assert!(exports.release(handoff.transfer));
/// assert_eq!(exports.counters().released, 1);
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct KvExports {
    lease: Duration,
    /// Woken whenever a transfer ends, for [`settled`](Self::settled).
    ended: Notify,
    /// The blocks; locked after `state` when both are.
    store: Arc<ShelfStore>,
    state: Mutex<State>,
}

/// The transfers, under the exports' lock.
struct State {
    /// Live transfers by id; ids grow, so the first is the oldest and expires first.
    transfers: BTreeMap<u64, Export>,
    next: u64,
    counters: ExportCounters,
}

/// One live transfer.
struct Export {
    blocks: Vec<SequenceHash>,
    expires: Instant,
}

/// What an [`offer`](KvExports::offer) kept: the transfer's id and its leading blocks that fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The transfer's id, to read and release it by.
    pub transfer: u64,
    /// The offered blocks that were kept: the leading ones, as many as fit (maybe none).
    pub blocks: Vec<SequenceHash>,
}

impl Offered {
    /// The hand-over that names these blocks, for a decode worker: `address` is the block
    /// server of `source` (`HOST:PORT`), or `None` when only this process can read them.
    pub fn handoff(self, source: WorkerId, address: Option<String>) -> KvHandoff {
        KvHandoff {
            source,
            address,
            transfer: self.transfer,
            blocks: self.blocks,
        }
    }
}

/// What a [`KvExports`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportCounters {
    /// Offers that kept at least one block.
    pub offered: u64,
    /// Blocks kept by offers (a block shared by two transfers counts twice).
    pub offered_blocks: u64,
    /// Blocks offered but not kept, for lack of room.
    pub refused_blocks: u64,
    /// Blocks read out, by [`read`](KvExports::read), the block server or [`store`](KvExports::store).
    pub pulled_blocks: u64,
    /// Their bytes.
    pub pulled_bytes: u64,
    /// Transfers ended by [`release`](KvExports::release).
    pub released: u64,
    /// Transfers whose lease ran out.
    pub expired: u64,
    /// Transfers dropped before their lease ran out, to make room for newer ones.
    pub dropped_for_room: u64,
}

impl KvExports {
    /// Exports of at most `capacity_blocks` blocks of `block_bytes` bytes, each transfer kept
    /// for `lease` unless released earlier. Memory is taken as blocks come, and kept for reuse.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `block_bytes` is zero or the blocks would not fit the address
    /// space.
    pub fn new(block_bytes: usize, capacity_blocks: usize, lease: Duration) -> Result<Self, Error> {
        Ok(KvExports {
            lease,
            ended: Notify::new(),
            store: Arc::new(ShelfStore::new(block_bytes, capacity_blocks)?),
            state: Mutex::new(State {
                transfers: BTreeMap::new(),
                next: 1,
                counters: ExportCounters::default(),
            }),
        })
    }

    /// The size of every block, in bytes.
    pub fn block_bytes(&self) -> usize {
        self.store.block_bytes()
    }

    /// How long a transfer is kept unless released.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How many transfers are live.
    pub fn transfers(&self) -> usize {
        self.state.lock().transfers.len()
    }

    /// How many distinct blocks the live transfers hold.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no transfer holds a block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The blocks of every live transfer as a read-only [`BlockStore`], for a decode worker in
    /// this process: it copies them straight into its KV memory.
    pub fn store(&self) -> Arc<dyn BlockStore> {
        self.store.clone()
    }

    /// The same blocks as a shelf, whose buffers a reader here borrows with no copy.
    pub(crate) fn shelf(&self) -> Arc<ShelfStore> {
        self.store.clone()
    }

    /// Keep a prompt's `blocks`, whose bytes are `bytes`: one block of
    /// [`block_bytes`](Self::block_bytes) after another, in order. Drops expired transfers,
    /// then the oldest ones while the offer does not fit; keeps the leading blocks that fit
    /// (see [`Offered`]).
    ///
    /// # Errors
    ///
    /// [`Error::BlockSize`] when `bytes` is not `blocks.len()` blocks long.
    pub fn offer(&self, blocks: &[SequenceHash], bytes: &[u8]) -> Result<Offered, Error> {
        self.offer_at(Instant::now(), blocks, bytes)
    }

    pub(crate) fn offer_at(
        &self,
        now: Instant,
        blocks: &[SequenceHash],
        bytes: &[u8],
    ) -> Result<Offered, Error> {
        let size = self.block_bytes();
        self.store.check_span(blocks.len(), bytes.len())?;
        Ok(self.offer_with_at(now, blocks, |i, into| {
            into.copy_from_slice(&bytes[i * size..(i + 1) * size]);
        }))
    }

    /// Keep a prompt's `blocks`, each written by `fill(i, into)` straight into its buffer here
    /// (`i` its position in `blocks`, `into` [`block_bytes`](Self::block_bytes) long): a caller
    /// whose blocks are in memory of its own (a KV cache) copies each once, with no staging
    /// buffer. `fill` is called, in order, only for the kept blocks the exports do not hold
    /// already (a prefix another live transfer offered keeps its bytes, which are a function of
    /// its hash), under the exports' lock: it should copy and return. Otherwise as
    /// [`offer`](Self::offer).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use dynamo_core::SequenceHash;
    /// use dynamo_kvbm::KvExports;
    ///
    /// let exports = KvExports::new(4, 8, Duration::from_secs(30))?;
    /// let cache: Vec<u8> = (0..12).collect(); // three blocks of 4 bytes
    /// let prompt = [SequenceHash(1), SequenceHash(2), SequenceHash(3)];
    /// let first = exports.offer_with(&prompt[..2], |i, into| {
    ///     into.copy_from_slice(&cache[i * 4..(i + 1) * 4]);
    /// });
    /// // The first two blocks are held already: only the third is written.
    /// let mut written = Vec::new();
    /// let second = exports.offer_with(&prompt, |i, into| {
    ///     written.push(i);
    ///     into.copy_from_slice(&cache[i * 4..(i + 1) * 4]);
    /// });
    /// assert_eq!(written, [2]);
    /// let mut bytes = [0; 12];
    /// assert_eq!(exports.read(second.transfer, &second.blocks, &mut bytes)?, 3);
    /// assert_eq!(bytes[..], cache[..]);
    /// # let _ = first;
    /// # Ok::<(), dynamo_kvbm::Error>(())
    /// ```
    pub fn offer_with(
        &self,
        blocks: &[SequenceHash],
        fill: impl FnMut(usize, &mut [u8]),
    ) -> Offered {
        self.offer_with_at(Instant::now(), blocks, fill)
    }

    fn offer_with_at(
        &self,
        now: Instant,
        blocks: &[SequenceHash],
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Offered {
        let mut state = self.state.lock();
        self.expire_locked(&mut state, now);
        let capacity = self.store.capacity();
        while state.transfers.len() >= capacity.max(1)
            || (self.store.lock().refs().fitting(blocks) < blocks.len()
                && !state.transfers.is_empty())
        {
            self.drop_oldest(&mut state);
        }
        let transfer = state.next;
        state.next += 1;
        let mut shelf = self.store.lock();
        let (fit, new) = shelf.acquire(blocks);
        for i in new {
            let mut buffer = shelf.buffer();
            fill(i, &mut buffer);
            shelf.place(blocks[i], buffer.freeze());
        }
        drop(shelf);
        state.counters.refused_blocks += (blocks.len() - fit) as u64;
        let kept = blocks[..fit].to_vec();
        if !kept.is_empty() {
            state.counters.offered += 1;
            state.counters.offered_blocks += fit as u64;
            let export = Export {
                blocks: kept.clone(),
                expires: now + self.lease,
            };
            state.transfers.insert(transfer, export);
        }
        Offered {
            transfer,
            blocks: kept,
        }
    }

    /// Copy the blocks of `hashes` of a live `transfer` into consecutive
    /// [`block_bytes`](Self::block_bytes) chunks of `into`; how many leading ones were there.
    /// Drops expired transfers first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTransfer`] when `transfer` is not live, [`Error::BlockSize`] when `into`
    /// is not `hashes.len()` blocks long.
    pub fn read(
        &self,
        transfer: u64,
        hashes: &[SequenceHash],
        into: &mut [u8],
    ) -> Result<usize, Error> {
        self.read_at(Instant::now(), transfer, hashes, into)
    }

    pub(crate) fn read_at(
        &self,
        now: Instant,
        transfer: u64,
        hashes: &[SequenceHash],
        into: &mut [u8],
    ) -> Result<usize, Error> {
        self.store.check_span(hashes.len(), into.len())?;
        let blocks = self.blocks_at(now, transfer, hashes)?;
        for (block, chunk) in blocks.iter().zip(into.chunks_exact_mut(self.block_bytes())) {
            chunk.copy_from_slice(block);
        }
        Ok(blocks.len())
    }

    /// The leading blocks of `hashes` of a live `transfer`, shared: what the block server
    /// sends, with no copy.
    pub(crate) fn blocks(
        &self,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<Vec<Bytes>, Error> {
        self.blocks_at(Instant::now(), transfer, hashes)
    }

    fn blocks_at(
        &self,
        now: Instant,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<Vec<Bytes>, Error> {
        let mut state = self.state.lock();
        self.check_live(&mut state, now, transfer)?;
        Ok(self.store.leading(hashes))
    }

    /// How many leading `hashes` of a live `transfer` the exports hold (for a reader in this
    /// process, who then reads them from [`store`](Self::store)). Drops expired transfers
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTransfer`] when `transfer` is not live.
    pub fn available(&self, transfer: u64, hashes: &[SequenceHash]) -> Result<usize, Error> {
        let mut state = self.state.lock();
        self.check_live(&mut state, Instant::now(), transfer)?;
        let shelf = self.store.lock();
        Ok(hashes
            .iter()
            .take_while(|hash| shelf.contains(**hash))
            .count())
    }

    /// End `transfer`, freeing the blocks no other transfer holds; `false` when it was not live.
    pub fn release(&self, transfer: u64) -> bool {
        let mut state = self.state.lock();
        let released = self.drop_transfer(&mut state, transfer);
        if released {
            state.counters.released += 1;
        }
        released
    }

    /// Drop the transfers whose lease ran out by `now`; how many.
    pub fn expire(&self, now: Instant) -> usize {
        self.expire_locked(&mut self.state.lock(), now)
    }

    /// Resolves once no transfer is live: each one released, expired or dropped for room. A
    /// prefill worker that is stopping waits for it (within its drain deadline), so that the
    /// decode workers can still pull what it handed over; a transfer nobody releases ends with
    /// its lease.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use dynamo_core::SequenceHash;
    /// use dynamo_kvbm::KvExports;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dynamo_kvbm::Error> {
    /// let exports = Arc::new(KvExports::new(4, 8, Duration::from_secs(30))?);
    /// let offered = exports.offer(&[SequenceHash(1)], &[7; 4])?;
    /// let decode_worker = Arc::clone(&exports);
    /// tokio::spawn(async move { decode_worker.release(offered.transfer) });
    /// exports.settled().await;
    /// assert_eq!(exports.transfers(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settled(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between the two still wakes us.
            ended.as_mut().enable();
            let first_expiry = {
                let mut state = self.state.lock();
                self.expire_locked(&mut state, Instant::now());
                // Ids grow and leases are equal: the first transfer expires first.
                match state.transfers.first_key_value() {
                    Some((_, export)) => export.expires,
                    None => return,
                }
            };
            // Woken by an end, or at the first lease's end: either way, look again.
            let lease_end = tokio::time::Instant::from_std(first_expiry);
            let _ = tokio::time::timeout_at(lease_end, ended).await;
        }
    }

    /// What the exports have done so far.
    pub fn counters(&self) -> ExportCounters {
        let mut counters = self.state.lock().counters;
        counters.pulled_blocks = self.store.read();
        counters.pulled_bytes = counters.pulled_blocks * self.block_bytes() as u64;
        counters
    }

    /// Drop expired transfers; [`Error::UnknownTransfer`] unless `transfer` is still live.
    fn check_live(&self, state: &mut State, now: Instant, transfer: u64) -> Result<(), Error> {
        self.expire_locked(state, now);
        if state.transfers.contains_key(&transfer) {
            Ok(())
        } else {
            Err(Error::UnknownTransfer { transfer })
        }
    }

    fn expire_locked(&self, state: &mut State, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((&transfer, export)) = state.transfers.first_key_value() {
            if export.expires > now {
                break;
            }
            self.drop_transfer(state, transfer);
            expired += 1;
        }
        state.counters.expired += expired as u64;
        expired
    }

    fn drop_oldest(&self, state: &mut State) {
        if let Some(&transfer) = state.transfers.keys().next() {
            self.drop_transfer(state, transfer);
            state.counters.dropped_for_room += 1;
        }
    }

    fn drop_transfer(&self, state: &mut State, transfer: u64) -> bool {
        let Some(export) = state.transfers.remove(&transfer) else {
            return false;
        };
        self.store.lock().release(&export.blocks);
        self.ended.notify_waiters();
        true
    }
}

impl fmt::Debug for KvExports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvExports")
            .field("store", &self.store)
            .field("transfers", &self.transfers())
            .field("lease", &self.lease)
            .finish()
    }
}
