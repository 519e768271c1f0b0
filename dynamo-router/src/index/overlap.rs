//! The answer to "how much of this prefix does each worker hold?".

use dynamo_core::{StorageTier, WorkerId};
use smallvec::SmallVec;

/// Workers an answer holds without allocating (most requests match one or two).
pub(crate) type Answer = SmallVec<[(WorkerId, TierOverlap); 2]>;

/// How many leading blocks of a request one worker holds, split by the fastest tier each block
/// is held in.
///
/// The prefix is contiguous: it stops at the first block the worker holds in no tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TierOverlap {
    /// Blocks held in device memory.
    pub device: u32,
    /// Blocks held in host memory (and not on the device).
    pub host: u32,
    /// Blocks held on disk (and in no faster tier).
    pub disk: u32,
    /// Blocks held in remote storage only.
    pub remote: u32,
}

impl TierOverlap {
    /// The length of the cached prefix in blocks, across tiers.
    pub fn total(&self) -> u32 {
        self.device + self.host + self.disk + self.remote
    }

    /// The blocks held in `tier`.
    pub fn get(&self, tier: StorageTier) -> u32 {
        match tier {
            StorageTier::Device => self.device,
            StorageTier::Host => self.host,
            StorageTier::Disk => self.disk,
            StorageTier::Remote => self.remote,
        }
    }

    pub(crate) fn add(&mut self, tier: StorageTier) {
        self.add_n(tier, 1);
    }

    pub(crate) fn add_n(&mut self, tier: StorageTier, blocks: u32) {
        match tier {
            StorageTier::Device => self.device += blocks,
            StorageTier::Host => self.host += blocks,
            StorageTier::Disk => self.disk += blocks,
            StorageTier::Remote => self.remote += blocks,
        }
    }
}

/// The cached prefix of every worker that holds at least the first block of a request.
///
/// Workers that are not listed hold nothing of the prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlaps {
    pub(crate) workers: Answer,
}

impl Overlaps {
    /// The overlap of `worker` (zero if it holds nothing).
    pub fn get(&self, worker: WorkerId) -> TierOverlap {
        self.workers
            .iter()
            .find(|(w, _)| *w == worker)
            .map(|(_, overlap)| *overlap)
            .unwrap_or_default()
    }

    /// Every worker with a non-empty overlap, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (WorkerId, TierOverlap)> + '_ {
        self.workers.iter().copied()
    }

    /// The longest overlap in blocks over all workers.
    pub fn max_depth(&self) -> u32 {
        self.workers
            .iter()
            .map(|(_, o)| o.total())
            .max()
            .unwrap_or(0)
    }

    /// The number of workers with a non-empty overlap.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker holds the first block.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}
