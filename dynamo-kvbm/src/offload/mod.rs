//! [`LowerTiers`]: the tiers below a device pool, holding the bytes of the blocks it evicts so
//! that a later request onboards them instead of computing them again.
//!
//! The tiers are ordered, fastest first (host memory, then a disk, then a remote store). A
//! block evicted from the device is **offloaded** to the first tier on the caller's thread (a
//! copy into host memory). A block the first tier evicts in turn goes, with its bytes, through a
//! bounded queue to an [`OffloadWorker`] on a thread of the caller's, which writes it to the
//! next tier in batches ([`BlockStore::put_many`]); what that tier evicts goes to the one after
//! it, and so on. A request whose prompt continues past the device's cached prefix asks the
//! tiers how many of the next blocks they hold, in order and without a gap, and **onboards**
//! them: their bytes are copied into the engine's buffers instead of being recomputed.
//!
//! Nothing ever waits for room: a full queue drops the offload (the block is lost to the tiers
//! below, and counted in [`OffloadCounters::dropped_queue_full`]), and a full tier evicts by its
//! policy. A write or read that fails is counted and the block treated as absent.
//!
//! Every change of a tier is a KV event tagged with its [`StorageTier`]
//! ([`LowerTiers::take_events`]), so a router crediting host and disk hits sees them.

mod worker;

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use dynamo_core::{HashedBlock, KvEventData, SequenceHash, StorageTier};

use crate::{BlockStore, Dropped, Error, Offer, TierCounters, TierIndex};

pub use worker::OffloadWorker;

/// One lower tier: the bookkeeping of which blocks it holds (and which to evict), and the store
/// that keeps their bytes.
#[derive(Debug)]
pub struct LowerTier {
    /// Which blocks the tier holds; its capacity must not exceed the store's.
    pub index: TierIndex,
    /// Where their bytes are.
    pub store: Arc<dyn BlockStore>,
}

impl LowerTier {
    /// A tier as large as `store`, in `store`'s tier, least recently used evicted first.
    pub fn new(store: Arc<dyn BlockStore>, block_size: dynamo_core::BlockSize) -> Self {
        LowerTier {
            index: TierIndex::new(store.tier(), store.capacity(), block_size),
            store,
        }
    }
}

/// How offloading to the tiers past the first runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadConfig {
    /// Blocks waiting for the [`OffloadWorker`], at most; an offload that finds the queue full
    /// is dropped and counted. Each waiting block holds its bytes, so the queue's memory is at
    /// most this many blocks.
    pub queue_blocks: usize,
    /// Blocks the worker writes in one batch, at most.
    pub batch_blocks: usize,
}

impl Default for OffloadConfig {
    fn default() -> Self {
        OffloadConfig {
            queue_blocks: 64,
            batch_blocks: 16,
        }
    }
}

/// One tier's traffic since the tiers were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierTraffic {
    /// The tier.
    pub tier: StorageTier,
    /// Blocks it holds now.
    pub held: usize,
    /// Blocks written to it.
    pub offloaded_blocks: u64,
    /// Bytes written to it.
    pub offloaded_bytes: u64,
    /// Blocks read from it by onboarding.
    pub onboarded_blocks: u64,
    /// Bytes read from it by onboarding.
    pub onboarded_bytes: u64,
    /// Its bookkeeping's counters (stored, evicted, declined, prefix hits).
    pub index: TierCounters,
}

/// The counters of all lower tiers: plain numbers, to export as metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffloadCounters {
    /// Each tier's traffic, fastest first.
    pub tiers: Vec<TierTraffic>,
    /// Offloads dropped because the worker's queue was full.
    pub dropped_queue_full: u64,
    /// Blocks a store failed to write (they are not held).
    pub failed_writes: u64,
    /// Blocks a store failed to read while onboarding (the onboarded prefix ends before them).
    pub failed_reads: u64,
    /// Blocks queued for the worker or being written by it now.
    pub queue_depth: usize,
    /// Blocks asked of the tiers by onboarding (each tier's hit rate is its onboarded blocks
    /// over these).
    pub looked_up: u64,
}

/// The tiers below a device pool, with the bytes of the blocks it evicted: offload on eviction,
/// onboard on a request, a KV event for every change.
///
/// Made with [`new`](Self::new), which also returns the [`OffloadWorker`] that writes to the
/// tiers past the first: run it on a thread of your own. Clones share the tiers; the worker
/// stops once every clone is dropped.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use dynamo_core::{BlockHasher, BlockSize, SequenceHash, StorageTier};
/// use dynamo_kvbm::{BlockPool, BlockStore, HostStore, LowerTier, LowerTiers, OffloadConfig};
///
/// let block_size = BlockSize::new(4)?;
/// let block_bytes = 64;
/// let host: Arc<dyn BlockStore> = Arc::new(HostStore::new(block_bytes, 8)?);
/// let (tiers, worker) =
///     LowerTiers::new(vec![LowerTier::new(host, block_size)], OffloadConfig::default())?;
/// std::thread::spawn(move || worker.run());
///
/// // A device pool of one block: registering a second evicts the first.
/// let mut pool = BlockPool::new(1, block_size);
/// pool.track_evictions(true);
/// let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
/// let mut device = vec![[0u8; 64]; 1]; // the engine's bytes, one block per pool id
/// let mut taken = Vec::new();
/// assert!(pool.take(1, &mut taken));
/// device[0] = [7; 64];
/// let mut held = vec![pool.register(taken.pop().expect("taken"), None, blocks[0])];
/// pool.release(&mut held);
///
/// assert!(pool.take(1, &mut taken)); // evicts blocks[0]...
/// for evicted in pool.take_evicted() {
///     // ...whose bytes are still in the engine's buffer: offload them before overwriting.
///     tiers.offload(evicted.block, evicted.parent, &device[evicted.id as usize])?;
/// }
/// device[0] = [9; 64];
///
/// // A request for blocks[0] onboards it from the host tier.
/// let mut bytes = Vec::new();
/// assert_eq!(tiers.onboard(&blocks, &mut bytes), 1);
/// assert_eq!(bytes, [7; 64]);
/// let events = tiers.take_events();
/// assert_eq!(events[0].0, StorageTier::Host);
/// # pool.release(&mut taken);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LowerTiers {
    shared: Arc<Shared>,
    queue: SyncSender<Queued>,
}

/// What the caller's handles and the worker share.
#[derive(Debug)]
struct Shared {
    stores: Vec<Arc<dyn BlockStore>>,
    block_bytes: usize,
    state: Mutex<State>,
    /// Signalled whenever the worker finishes a batch.
    drained: Condvar,
}

/// Every tier's bookkeeping and counters, under one lock. Store I/O past the first tier runs
/// outside it, so a store and its index may briefly disagree: a block the index lists but the
/// store does not hold yet reads as absent, which ends an onboarded prefix early and nothing
/// worse (a block's bytes are a function of its hash, so a block the store does hold is right).
#[derive(Debug)]
struct State {
    indexes: Vec<TierIndex>,
    counters: OffloadCounters,
}

/// A block on its way to a tier past the first, with its bytes.
#[derive(Debug)]
struct Queued {
    block: Dropped,
    bytes: Vec<u8>,
}

impl LowerTiers {
    /// The tiers `tiers`, fastest first, and the worker that writes to those past the first.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is no tier, when the stores' block sizes differ, or when an
    /// index is larger than its store or names another tier.
    pub fn new(
        tiers: Vec<LowerTier>,
        config: OffloadConfig,
    ) -> Result<(LowerTiers, OffloadWorker), Error> {
        let Some(first) = tiers.first() else {
            return Err(Error::Config {
                tier: StorageTier::Host,
                reason: "offloading needs at least one tier".to_owned(),
            });
        };
        let block_bytes = first.store.block_bytes();
        for tier in &tiers {
            let reason = if tier.store.block_bytes() != block_bytes {
                format!(
                    "its blocks are {} bytes, the first tier's {block_bytes}",
                    tier.store.block_bytes()
                )
            } else if tier.index.capacity() > tier.store.capacity() {
                format!(
                    "its index holds {} blocks, its store {}",
                    tier.index.capacity(),
                    tier.store.capacity()
                )
            } else if tier.index.tier() != tier.store.tier() {
                format!("its index is of the {:?} tier", tier.index.tier())
            } else {
                continue;
            };
            return Err(Error::Config {
                tier: tier.store.tier(),
                reason,
            });
        }
        let counters = OffloadCounters {
            tiers: tiers
                .iter()
                .map(|tier| TierTraffic {
                    tier: tier.store.tier(),
                    ..TierTraffic::default()
                })
                .collect(),
            ..OffloadCounters::default()
        };
        let (stores, indexes) = tiers
            .into_iter()
            .map(|tier| (tier.store, tier.index))
            .unzip();
        let shared = Arc::new(Shared {
            stores,
            block_bytes,
            state: Mutex::new(State { indexes, counters }),
            drained: Condvar::new(),
        });
        let (queue, receiver) = std::sync::mpsc::sync_channel(config.queue_blocks);
        let worker = OffloadWorker::new(Arc::clone(&shared), receiver, config.batch_blocks);
        Ok((LowerTiers { shared, queue }, worker))
    }

    /// The size of every block, in bytes.
    pub fn block_bytes(&self) -> usize {
        self.shared.block_bytes
    }

    /// Keep `block` (following `parent`), whose bytes are `bytes`, in the first tier, on this
    /// thread. The blocks that tier evicts to make room are queued, with their bytes, for the
    /// tier below; when the queue is full they are dropped and counted.
    ///
    /// # Errors
    ///
    /// [`Error::BlockSize`] when `bytes` is not [`block_bytes`](Self::block_bytes) long. A
    /// store that fails to write is counted in [`OffloadCounters::failed_writes`], not returned.
    pub fn offload(
        &self,
        block: HashedBlock,
        parent: Option<SequenceHash>,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let store = &self.shared.stores[0];
        if bytes.len() != self.shared.block_bytes {
            return Err(Error::BlockSize {
                tier: store.tier(),
                expected: self.shared.block_bytes,
                got: bytes.len(),
            });
        }
        let has_next = self.shared.stores.len() > 1;
        let mut down = Vec::new();
        {
            // The first tier's store is written under the lock: it is a copy into memory, and
            // its index and store then never disagree.
            let mut state = self.shared.lock();
            let mut dropped = Vec::new();
            if state.indexes[0].offer(block, parent, &mut dropped) != Offer::Stored {
                return Ok(());
            }
            for victim in dropped {
                let hash = victim.block.sequence;
                if has_next {
                    let mut bytes = vec![0; self.shared.block_bytes];
                    if matches!(store.get(hash, &mut bytes), Ok(true)) {
                        down.push(Queued {
                            block: victim,
                            bytes,
                        });
                    }
                }
                if let Err(error) = store.remove(hash) {
                    tracing::warn!(%error, "removing an evicted block from the first tier");
                }
            }
            match store.put(block.sequence, bytes) {
                Ok(()) => state.counters.tiers[0].add_offloaded(1, bytes.len()),
                Err(error) => {
                    tracing::warn!(%error, "offloading a block to the first tier");
                    state.indexes[0].remove(block.sequence);
                    state.counters.failed_writes += 1;
                }
            }
        }
        for queued in down {
            self.enqueue(queued);
        }
        Ok(())
    }

    /// Queue `queued` for the worker, or drop and count it when the queue is full.
    fn enqueue(&self, queued: Queued) {
        // Counted before sending, so that the worker never finishes a block not yet counted.
        self.shared.lock().counters.queue_depth += 1;
        match self.queue.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let mut state = self.shared.lock();
                state.counters.queue_depth -= 1;
                state.counters.dropped_queue_full += 1;
            }
        }
    }

    /// How many leading blocks of `blocks` the tiers hold, one after another without a gap
    /// (each block from the fastest tier that holds it, whichever tiers the others come from), with
    /// their bytes copied into `into` (resized to that many blocks). The blocks found are
    /// marked used in their tiers.
    ///
    /// A block a store cannot read ends the prefix there (counted in
    /// [`OffloadCounters::failed_reads`]). The blocks stay in their tiers.
    pub fn onboard(&self, blocks: &[HashedBlock], into: &mut Vec<u8>) -> usize {
        // Which tier serves which run of blocks, decided under the lock: each block from the
        // fastest tier that holds it.
        let mut runs: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        {
            let mut state = self.shared.lock();
            for (at, block) in blocks.iter().enumerate() {
                let holder = state
                    .indexes
                    .iter()
                    .position(|index| index.contains(block.sequence));
                let Some(tier) = holder else {
                    break;
                };
                match runs.last_mut() {
                    Some((last, run)) if *last == tier => run.end = at + 1,
                    _ => runs.push((tier, at..at + 1)),
                }
            }
            for (tier, run) in &runs {
                // Marks the run used in its tier.
                state.indexes[*tier].prefix(&blocks[run.clone()]);
            }
        }
        let size = self.shared.block_bytes;
        let total = runs.last().map_or(0, |(_, run)| run.end);
        into.clear();
        into.resize(total * size, 0);
        let mut read = Vec::with_capacity(runs.len());
        let mut failed = false;
        let mut onboarded = 0;
        for (tier, run) in runs {
            let hashes: Vec<SequenceHash> = blocks[run.clone()]
                .iter()
                .map(|block| block.sequence)
                .collect();
            let bytes = &mut into[run.start * size..run.end * size];
            let held = match self.shared.stores[tier].get_many(&hashes, bytes) {
                Ok(held) => held.iter().take_while(|&&held| held).count(),
                Err(error) => {
                    tracing::warn!(%error, "onboarding from a lower tier");
                    failed = true;
                    0
                }
            };
            read.push((tier, held));
            onboarded += held;
            if held < run.len() {
                break;
            }
        }
        into.truncate(onboarded * size);
        let mut state = self.shared.lock();
        state.counters.looked_up += blocks.len() as u64;
        for (tier, held) in read {
            state.counters.tiers[tier].add_onboarded(held, size);
        }
        state.counters.failed_reads += u64::from(failed);
        onboarded
    }

    /// Every tier's cache changes since the last call, each tagged with its tier; in order
    /// within a tier (a block's `Stored` before its `Removed`).
    pub fn take_events(&self) -> Vec<(StorageTier, KvEventData)> {
        let mut state = self.shared.lock();
        let mut events = Vec::new();
        for index in &mut state.indexes {
            let tier = index.tier();
            events.extend(index.take_events().into_iter().map(|event| (tier, event)));
        }
        events
    }

    /// The counters now.
    pub fn counters(&self) -> OffloadCounters {
        let state = self.shared.lock();
        let mut counters = state.counters.clone();
        for (traffic, index) in counters.tiers.iter_mut().zip(&state.indexes) {
            traffic.held = index.len();
            traffic.index = index.counters();
        }
        counters
    }

    /// Wait until the worker has written every queued block, at most `timeout`; whether it
    /// has. For tests and benches that want the tiers settled.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.counters.queue_depth > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            state = self
                .shared
                .drained
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TierTraffic {
    fn add_offloaded(&mut self, blocks: usize, bytes: usize) {
        self.offloaded_blocks += blocks as u64;
        self.offloaded_bytes += bytes as u64;
    }

    fn add_onboarded(&mut self, blocks: usize, block_bytes: usize) {
        self.onboarded_blocks += blocks as u64;
        self.onboarded_bytes += (blocks * block_bytes) as u64;
    }
}

#[cfg(test)]
mod tests;
