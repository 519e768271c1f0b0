//! [`DiskStore`]: blocks in one preallocated file on a local disk (tier G3).

mod aligned;
mod batch;
mod config;
mod file;
#[cfg(test)]
mod tests;

pub use config::DiskConfig;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dynamo_core::{SequenceHash, StorageTier};
use parking_lot::RwLock;

use self::aligned::{BouncePool, is_aligned, round_up};
use self::batch::Gate;
use super::{check_shape, check_size};
use crate::{BlockStore, Error};

const TIER: StorageTier = StorageTier::Disk;

/// Blocks in one file on a local disk, one slot per block, read and written with direct I/O
/// (`O_DIRECT`) so that offloaded KV neither pollutes nor waits on the page cache.
///
/// The file is created (or truncated) and preallocated when the store is opened: slot `i` lives
/// at `i × stride`, where the stride is the block size rounded up to 4096 bytes. Which hash is in
/// which slot is kept in memory only, so a store opened again on the same path starts empty; the
/// file stays when the store is dropped.
///
/// Direct I/O needs page-aligned memory. Blocks are staged: each is read into or written from
/// one of the store's own reused, aligned buffers and copied out or in, whatever the caller's
/// memory. [`DiskConfig::stage_reads`] and [`DiskConfig::stage_writes`] turn that off for
/// caller memory that is page-aligned and a whole number of pages long, which then goes to and
/// from the disk as it is (unaligned memory is always copied): measured on a virtualised disk,
/// I/O through a few reused buffers plus the copy was faster than I/O straight into a batch's
/// many distinct pages (`docs/kvbm.md`, "Measured against memcpy and fio"). Where the file system refuses `O_DIRECT` (tmpfs, some network file systems) the store
/// says why once with `tracing::warn!` and uses the page cache; [`direct_io`](Self::direct_io)
/// tells which mode is in effect.
///
/// [`put_many`](BlockStore::put_many) and [`get_many`](BlockStore::get_many) keep up to
/// [`DiskConfig::queue_depth`] reads or writes in flight, each on a scoped thread of the batch;
/// when blocks are copied through buffers, one thread more copies while the others' I/O is
/// under way, so the copies do not leave the queue short.
/// Every call blocks its thread until the disk answers: call from a thread that may block
/// (`tokio::task::spawn_blocking` or a thread of your own), never from an async task.
///
/// A batch read holds the store's index for reading from start to end, so a remove (or the end
/// of a put) waits for reads already under way rather than reusing their slots.
///
/// ```
/// use dynamo_core::SequenceHash;
/// use dynamo_kvbm::{BlockStore, DiskConfig, DiskStore};
///
/// let path = std::env::temp_dir().join(format!("kvbm-doc-{}.blocks", std::process::id()));
/// let store = DiskStore::open(DiskConfig::new(&path, 1000, 4))?;
/// store.put(SequenceHash(1), &[7; 1000])?;
///
/// let mut block = vec![0; 1000];
/// assert!(store.get(SequenceHash(1), &mut block)?);
/// assert_eq!(block, [7; 1000]);
/// // Where the file system refuses O_DIRECT (tmpfs, say), the store uses the page cache.
/// let _direct = store.direct_io();
/// # drop(store);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct DiskStore {
    file: File,
    path: PathBuf,
    direct: bool,
    block_bytes: usize,
    /// Bytes per slot in the file: `block_bytes` rounded up to the alignment.
    stride: usize,
    capacity: usize,
    queue_depth: usize,
    /// Whether reads into aligned caller memory go through a bounce buffer all the same.
    stage_reads: bool,
    /// Whether writes from aligned caller memory go through a bounce buffer all the same.
    stage_writes: bool,
    index: RwLock<Index>,
    bounce: BouncePool,
}

/// Which slot holds which block, and which slots are free.
///
/// A slot being written is in neither: it is taken from `free` before the write and enters
/// `slots` after it, so no reader sees a block half written.
struct Index {
    slots: HashMap<SequenceHash, usize>,
    free: Vec<usize>,
}

impl DiskStore {
    /// Create the store's file and open it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a block size of zero or a file too large to address, and
    /// [`Error::Open`] when the file cannot be created or its space reserved.
    pub fn open(config: DiskConfig) -> Result<Self, Error> {
        let too_large = || Error::Config {
            tier: TIER,
            reason: format!(
                "{} blocks of {} bytes do not fit a file",
                config.capacity, config.block_bytes
            ),
        };
        check_shape(TIER, config.block_bytes, config.capacity)?;
        let stride = round_up(config.block_bytes).ok_or_else(too_large)?;
        let file_bytes = stride
            .checked_mul(config.capacity)
            .and_then(|bytes| u64::try_from(bytes).ok())
            .ok_or_else(too_large)?;
        let opened = file::open(&config.path, file_bytes, config.direct_io).map_err(|source| {
            Error::Open {
                tier: TIER,
                path: config.path.clone(),
                source,
            }
        })?;
        Ok(DiskStore {
            file: opened.file,
            direct: opened.direct,
            path: config.path,
            block_bytes: config.block_bytes,
            stride,
            capacity: config.capacity,
            queue_depth: config.queue_depth,
            stage_reads: config.stage_reads,
            stage_writes: config.stage_writes,
            index: RwLock::new(Index {
                slots: HashMap::with_capacity(config.capacity),
                free: (0..config.capacity).rev().collect(),
            }),
            bounce: BouncePool::new(stride),
        })
    }

    /// Whether the store bypasses the page cache (`O_DIRECT`); `false` when the file system
    /// refused it or the config turned it off.
    pub fn direct_io(&self) -> bool {
        self.direct
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads or writes of one batch in flight at once.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    fn offset(&self, slot: usize) -> u64 {
        // Fits: `open` checked that `stride × capacity` does.
        (slot * self.stride) as u64
    }

    fn io_error(hash: SequenceHash) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io {
            tier: TIER,
            hash,
            source,
        }
    }

    /// Whether writing `block` copies it through a bounce buffer.
    fn copies_write(&self, block: &[u8]) -> bool {
        self.direct && (self.stage_writes || !is_aligned(block))
    }

    /// Whether reading into `into` copies through a bounce buffer.
    fn copies_read(&self, into: &[u8]) -> bool {
        self.direct && (self.stage_reads || !is_aligned(into))
    }

    /// Threads for a batch: one more than the queue depth when blocks are copied, so that a
    /// copy overlaps the I/O of the others.
    fn threads(&self, copies: bool) -> usize {
        self.queue_depth + usize::from(copies)
    }

    /// Write `block` (of `block_bytes`) into `slot`, the write itself through `gate`.
    fn write_slot(
        &self,
        hash: SequenceHash,
        slot: usize,
        block: &[u8],
        gate: &Gate,
    ) -> Result<(), Error> {
        let offset = self.offset(slot);
        let written = if self.copies_write(block) {
            self.bounce.with(|buf| {
                let buf = buf.as_bytes_mut();
                buf[..block.len()].copy_from_slice(block);
                gate.io(|| self.file.write_all_at(buf, offset))
            })
        } else {
            gate.io(|| self.file.write_all_at(block, offset))
        };
        written.map_err(Self::io_error(hash))
    }

    /// Read `slot` into `into` (of `block_bytes`), the read itself through `gate`.
    fn read_slot(
        &self,
        hash: SequenceHash,
        slot: usize,
        into: &mut [u8],
        gate: &Gate,
    ) -> Result<(), Error> {
        let offset = self.offset(slot);
        let read = if self.copies_read(into) {
            self.bounce.with(|buf| {
                let buf = buf.as_bytes_mut();
                gate.io(|| self.file.read_exact_at(buf, offset))?;
                into.copy_from_slice(&buf[..into.len()]);
                Ok(())
            })
        } else {
            gate.io(|| self.file.read_exact_at(into, offset))
        };
        read.map_err(Self::io_error(hash))
    }

    /// Enter written slots into the index; a hash that a concurrent put entered meanwhile keeps
    /// that slot and gives this one back.
    fn publish(index: &mut Index, hash: SequenceHash, slot: usize) {
        match index.slots.entry(hash) {
            Entry::Occupied(_) => index.free.push(slot),
            Entry::Vacant(vacant) => {
                vacant.insert(slot);
            }
        }
    }
}

/// One block of a batched put.
struct WriteJob<'a> {
    hash: SequenceHash,
    slot: usize,
    block: &'a [u8],
    result: Result<(), Error>,
}

/// One block of a batched get.
struct ReadJob<'a> {
    hash: SequenceHash,
    slot: Option<usize>,
    into: &'a mut [u8],
    result: Result<(), Error>,
}

impl BlockStore for DiskStore {
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
        self.index.read().slots.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.index.read().slots.contains_key(&hash)
    }

    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        check_size(TIER, self.block_bytes, block.len())?;
        let slot = {
            let mut index = self.index.write();
            if index.slots.contains_key(&hash) {
                return Ok(());
            }
            index.free.pop().ok_or(Error::Full {
                tier: TIER,
                capacity: self.capacity,
            })?
        };
        let written = self.write_slot(hash, slot, block, &Gate::new(1));
        let mut index = self.index.write();
        match written {
            Ok(()) => Self::publish(&mut index, hash, slot),
            Err(_) => index.free.push(slot),
        }
        written
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        check_size(TIER, self.block_bytes, into.len())?;
        let index = self.index.read();
        let Some(&slot) = index.slots.get(&hash) else {
            return Ok(false);
        };
        self.read_slot(hash, slot, into, &Gate::new(1))?;
        Ok(true)
    }

    fn remove(&self, hash: SequenceHash) -> Result<bool, Error> {
        let mut index = self.index.write();
        let Some(slot) = index.slots.remove(&hash) else {
            return Ok(false);
        };
        index.free.push(slot);
        Ok(true)
    }

    fn put_many(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), Error> {
        // Take a slot for every new block, in order, up to the first that cannot be stored.
        let mut refused = None;
        let mut jobs = Vec::with_capacity(blocks.len());
        {
            let mut index = self.index.write();
            let mut batch = HashSet::with_capacity(blocks.len());
            for &(hash, block) in blocks {
                if let Err(error) = check_size(TIER, self.block_bytes, block.len()) {
                    refused = Some(error);
                    break;
                }
                if index.slots.contains_key(&hash) || !batch.insert(hash) {
                    continue;
                }
                let Some(slot) = index.free.pop() else {
                    refused = Some(Error::Full {
                        tier: TIER,
                        capacity: self.capacity,
                    });
                    break;
                };
                jobs.push(WriteJob {
                    hash,
                    slot,
                    block,
                    result: Ok(()),
                });
            }
        }
        let copies = jobs.iter().any(|job| self.copies_write(job.block));
        // In file order, whatever order the free list gave the slots in: a batch then writes
        // forward through the file as a sequential writer would.
        jobs.sort_unstable_by_key(|job| job.slot);
        batch::run(
            self.queue_depth,
            self.threads(copies),
            &mut jobs,
            |job, gate| {
                job.result = self.write_slot(job.hash, job.slot, job.block, gate);
            },
        );
        // Every block written is kept; a failed write gives its slot back.
        let mut index = self.index.write();
        let mut failed = None;
        for job in jobs {
            match job.result {
                Ok(()) => Self::publish(&mut index, job.hash, job.slot),
                Err(error) => {
                    index.free.push(job.slot);
                    failed.get_or_insert(error);
                }
            }
        }
        match failed.or(refused) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn get_many(&self, hashes: &[SequenceHash], into: &mut [u8]) -> Result<Vec<bool>, Error> {
        check_size(TIER, hashes.len() * self.block_bytes, into.len())?;
        let index = self.index.read();
        let mut jobs: Vec<ReadJob<'_>> = hashes
            .iter()
            .zip(into.chunks_exact_mut(self.block_bytes))
            .map(|(&hash, into)| ReadJob {
                hash,
                slot: index.slots.get(&hash).copied(),
                into,
                result: Ok(()),
            })
            .collect();
        let copies = jobs.iter().any(|job| self.copies_read(job.into));
        // The blocks held, in file order (the answer stays in the order asked).
        let mut held: Vec<(usize, &mut ReadJob<'_>)> = jobs
            .iter_mut()
            .filter_map(|job| job.slot.map(|slot| (slot, job)))
            .collect();
        held.sort_unstable_by_key(|&(slot, _)| slot);
        batch::run(
            self.queue_depth,
            self.threads(copies),
            &mut held,
            |(slot, job), gate| {
                job.result = self.read_slot(job.hash, *slot, job.into, gate);
            },
        );
        jobs.into_iter()
            .map(|job| job.result.map(|()| job.slot.is_some()))
            .collect()
    }
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("direct_io", &self.direct)
            .field("block_bytes", &self.block_bytes)
            .field("capacity", &self.capacity)
            .field("queue_depth", &self.queue_depth)
            .field("stage_reads", &self.stage_reads)
            .field("stage_writes", &self.stage_writes)
            .field("len", &self.len())
            .finish()
    }
}
