//! [`DiskConfig`]: where a disk store lives and how it does its I/O.

use std::path::PathBuf;

/// How a [`DiskStore`](super::DiskStore) is made: its file, its shape and its I/O.
///
/// ```
/// use dynamo_kvbm::DiskConfig;
///
/// let config = DiskConfig::new("/var/cache/kv.blocks", 2_949_120, 1024).queue_depth(8);
/// assert_eq!(config.capacity(), 1024);
/// ```
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub(super) path: PathBuf,
    pub(super) block_bytes: usize,
    pub(super) capacity: usize,
    pub(super) queue_depth: usize,
    pub(super) direct_io: bool,
    pub(super) stage_reads: bool,
    pub(super) stage_writes: bool,
}

impl DiskConfig {
    /// The queue depth a config starts with: reads or writes of a batch in flight at once.
    pub const DEFAULT_QUEUE_DEPTH: usize = 4;

    /// A store of `capacity` blocks of `block_bytes` bytes in the file at `path`, with
    /// [`DEFAULT_QUEUE_DEPTH`](Self::DEFAULT_QUEUE_DEPTH) and direct I/O where the file system
    /// allows it.
    pub fn new(path: impl Into<PathBuf>, block_bytes: usize, capacity: usize) -> Self {
        DiskConfig {
            path: path.into(),
            block_bytes,
            capacity,
            queue_depth: Self::DEFAULT_QUEUE_DEPTH,
            direct_io: true,
            stage_reads: true,
            stage_writes: true,
        }
    }

    /// How many reads or writes of one batch ([`put_many`](crate::BlockStore::put_many),
    /// [`get_many`](crate::BlockStore::get_many)) are in flight at once, each on a thread of
    /// its own for the length of the batch; at least 1.
    pub fn queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }

    /// Whether to try direct I/O (`O_DIRECT`, bypassing the page cache); on by default. Off,
    /// or where the file system refuses it, the store reads and writes through the page cache.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Whether direct reads into page-aligned caller memory go through the store's own
    /// page-aligned buffers (queue depth + 1 of them, reused) and are copied out, as reads into
    /// unaligned memory always are; on by default. Off, they go straight into the caller's
    /// memory, which saves the copy where the disk is as fast into many distinct pages as into a
    /// few reused ones (on the virtualised disk these figures come from it was not: see
    /// `docs/kvbm.md`). No effect without direct I/O.
    pub fn stage_reads(mut self, on: bool) -> Self {
        self.stage_reads = on;
        self
    }

    /// Whether direct writes from page-aligned caller memory are copied into the store's own
    /// buffers first, as writes from unaligned memory always are; on by default, for the same
    /// measured reason as [`stage_reads`](Self::stage_reads). Off, they go to the disk from the
    /// caller's memory as they are, saving the copy. No effect without direct I/O.
    pub fn stage_writes(mut self, on: bool) -> Self {
        self.stage_writes = on;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The size of every block, in bytes.
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// How many blocks the store holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
