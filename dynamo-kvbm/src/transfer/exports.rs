//! [`KvExports`]: a prefill worker's outbox of KV blocks, waiting for decode workers to pull.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash, StorageTier, WorkerId};
use parking_lot::Mutex;

use super::refs::RefCounts;
use crate::{BlockStore, Error, HostStore};

const TIER: StorageTier = StorageTier::Host;

/// A prefill worker's outbox: copies of the KV blocks it handed over, kept in host memory until
/// the decode worker releases them or their lease runs out.
///
/// [`offer`](Self::offer) copies a prompt's blocks in and names them with a transfer id;
/// [`read`](Self::read) copies them out (the block server does, for a decode worker in another
/// process); [`release`](Self::release) ends the transfer. Blocks are kept once per sequence
/// hash and counted per transfer: two transfers of the same prefix share its blocks, and a block
/// leaves when no transfer holds it.
///
/// An in-process decode worker reads the exports themselves as a [`BlockStore`] (through
/// [`LocalExports`](super::LocalExports)): one copy, from here into its KV memory. As a store,
/// the exports can be read but not written ([`Error::ReadOnly`]).
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
/// assert!(exports.release(handoff.transfer));
/// assert_eq!(exports.counters().released, 1);
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct KvExports {
    store: HostStore,
    lease: Duration,
    state: Mutex<State>,
    pulled_blocks: AtomicU64,
}

/// The transfers and their blocks, under the exports' lock.
struct State {
    refs: RefCounts,
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
    /// Blocks read out, by [`read`](KvExports::read) or as a [`BlockStore`].
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
    /// for `lease` unless released earlier.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `block_bytes` is zero or the blocks would not fit the address
    /// space.
    pub fn new(block_bytes: usize, capacity_blocks: usize, lease: Duration) -> Result<Self, Error> {
        Ok(KvExports {
            store: HostStore::new(block_bytes, capacity_blocks)?,
            lease,
            state: Mutex::new(State {
                refs: RefCounts::new(capacity_blocks),
                transfers: BTreeMap::new(),
                next: 1,
                counters: ExportCounters::default(),
            }),
            pulled_blocks: AtomicU64::new(0),
        })
    }

    /// How long a transfer is kept unless released.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How many transfers are live.
    pub fn transfers(&self) -> usize {
        self.state.lock().transfers.len()
    }

    /// Keep a prompt's `blocks`, whose bytes are `bytes`: one block of
    /// [`block_bytes`](BlockStore::block_bytes) after another, in order. Drops expired
    /// transfers, then the oldest ones while the offer does not fit; keeps the leading blocks
    /// that fit (see [`Offered`]).
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
        let size = self.store.block_bytes();
        self.check_span(blocks.len(), bytes.len())?;
        let mut state = self.state.lock();
        self.expire_locked(&mut state, now);
        while state.transfers.len() >= self.store.capacity().max(1)
            || (state.refs.fitting(blocks) < blocks.len() && !state.transfers.is_empty())
        {
            self.drop_oldest(&mut state);
        }
        let kept = &blocks[..state.refs.fitting(blocks)];
        let transfer = state.next;
        state.next += 1;
        state.counters.refused_blocks += (blocks.len() - kept.len()) as u64;
        if kept.is_empty() {
            return Ok(Offered {
                transfer,
                blocks: Vec::new(),
            });
        }
        let new: Vec<(SequenceHash, &[u8])> = state
            .refs
            .acquire(kept)
            .into_iter()
            .map(|i| (kept[i], &bytes[i * size..(i + 1) * size]))
            .collect();
        if let Err(error) = self.store.put_many(&new) {
            self.forget(&mut state, kept);
            return Err(error);
        }
        state.counters.offered += 1;
        state.counters.offered_blocks += kept.len() as u64;
        let expires = now + self.lease;
        let blocks = kept.to_vec();
        state.transfers.insert(
            transfer,
            Export {
                blocks: blocks.clone(),
                expires,
            },
        );
        Ok(Offered { transfer, blocks })
    }

    /// Copy the blocks of `hashes` of a live `transfer` into consecutive
    /// [`block_bytes`](BlockStore::block_bytes) chunks of `into`; how many leading ones were
    /// there. Drops expired transfers first.
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
        self.check_span(hashes.len(), into.len())?;
        self.check_live(&mut self.state.lock(), now, transfer)?;
        // A block dropped meanwhile reads as missing; one offered again reads the same bytes.
        let found = self.store.get_many(hashes, into)?;
        let leading = found.iter().take_while(|found| **found).count();
        self.count_pulled(leading);
        Ok(leading)
    }

    /// How many leading `hashes` of a live `transfer` the exports hold (for a reader in this
    /// process, who then reads them as a [`BlockStore`]). Drops expired transfers first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTransfer`] when `transfer` is not live.
    pub fn available(&self, transfer: u64, hashes: &[SequenceHash]) -> Result<usize, Error> {
        let mut state = self.state.lock();
        self.check_live(&mut state, Instant::now(), transfer)?;
        Ok(hashes
            .iter()
            .take_while(|hash| state.refs.contains(**hash))
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

    /// What the exports have done so far.
    pub fn counters(&self) -> ExportCounters {
        let mut counters = self.state.lock().counters;
        counters.pulled_blocks = self.pulled_blocks.load(Ordering::Relaxed);
        counters.pulled_bytes = counters.pulled_blocks * self.store.block_bytes() as u64;
        counters
    }

    /// [`Error::BlockSize`] unless `bytes` is `blocks` blocks long.
    fn check_span(&self, blocks: usize, bytes: usize) -> Result<(), Error> {
        let expected = blocks.saturating_mul(self.store.block_bytes());
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

    /// Drop expired transfers; [`Error::UnknownTransfer`] unless `transfer` is still live.
    fn check_live(&self, state: &mut State, now: Instant, transfer: u64) -> Result<(), Error> {
        self.expire_locked(state, now);
        if state.transfers.contains_key(&transfer) {
            Ok(())
        } else {
            Err(Error::UnknownTransfer { transfer })
        }
    }

    fn count_pulled(&self, blocks: usize) {
        self.pulled_blocks
            .fetch_add(blocks as u64, Ordering::Relaxed);
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
        self.forget(state, &export.blocks);
        true
    }

    /// Release `blocks` once and remove from the store those nothing holds.
    fn forget(&self, state: &mut State, blocks: &[SequenceHash]) {
        for hash in state.refs.release(blocks) {
            // A host store's removal cannot fail; a missing block is already gone.
            let _ = self.store.remove(hash);
        }
    }
}

/// The exports as a read-only store, for a decode worker in the same process: it reads every
/// block of every live transfer.
impl BlockStore for KvExports {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.store.block_bytes()
    }

    fn capacity(&self) -> usize {
        self.store.capacity()
    }

    fn len(&self) -> usize {
        self.store.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.store.contains(hash)
    }

    /// Always [`Error::ReadOnly`]: blocks come in by [`KvExports::offer`].
    fn put(&self, _hash: SequenceHash, _block: &[u8]) -> Result<(), Error> {
        Err(Error::ReadOnly { tier: TIER })
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        let found = self.store.get(hash, into)?;
        self.count_pulled(usize::from(found));
        Ok(found)
    }

    /// Always [`Error::ReadOnly`]: blocks leave by [`KvExports::release`] or expiry.
    fn remove(&self, _hash: SequenceHash) -> Result<bool, Error> {
        Err(Error::ReadOnly { tier: TIER })
    }

    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        let found = self.store.get_many(hashes, into)?;
        self.count_pulled(found.iter().filter(|found| **found).count());
        Ok(found)
    }
}

impl fmt::Debug for KvExports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvExports")
            .field("block_bytes", &self.store.block_bytes())
            .field("capacity", &self.store.capacity())
            .field("len", &self.store.len())
            .field("transfers", &self.transfers())
            .field("lease", &self.lease)
            .finish()
    }
}
