//! KV-cache events: what engines tell the router about the blocks they hold.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::{HashedBlock, SequenceHash};
use crate::tokens::BlockSize;

/// One engine worker: an engine instance and its data-parallel rank.
///
/// A data-parallel engine runs several independent KV caches under one instance; each rank is a
/// separate routing target.
///
/// ```
/// use dynamo_core::WorkerId;
///
/// assert_eq!(WorkerId::new(7).with_dp_rank(1).to_string(), "7/1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// The engine instance.
    pub worker: u64,
    /// The data-parallel rank within the instance; 0 for engines without data parallelism.
    #[serde(default)]
    pub dp_rank: u32,
}

impl WorkerId {
    /// Rank 0 of engine instance `worker`.
    pub const fn new(worker: u64) -> Self {
        WorkerId { worker, dp_rank: 0 }
    }

    /// The same instance at another data-parallel rank.
    pub const fn with_dp_rank(self, dp_rank: u32) -> Self {
        WorkerId { dp_rank, ..self }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.worker, self.dp_rank)
    }
}

/// Where a block's KV data lives; deeper tiers are larger and slower to bring back.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StorageTier {
    /// Accelerator memory: usable at once.
    #[default]
    Device,
    /// Host memory.
    Host,
    /// Local disk.
    Disk,
    /// Remote or shared storage.
    Remote,
}

impl StorageTier {
    /// Every tier, fastest first.
    pub const ALL: [StorageTier; 4] = [
        StorageTier::Device,
        StorageTier::Host,
        StorageTier::Disk,
        StorageTier::Remote,
    ];

    /// The stable snake_case name of the tier, for metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            StorageTier::Device => "device",
            StorageTier::Host => "host",
            StorageTier::Disk => "disk",
            StorageTier::Remote => "remote",
        }
    }
}

/// What changed in a worker's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvEventData {
    /// Blocks were stored, as a chain: `blocks[0]` follows `parent` (`None`: the start of a
    /// sequence) and each later block follows the one before it.
    Stored {
        /// The sequence hash of the block the chain continues.
        parent: Option<SequenceHash>,
        /// The engine's block size; consumers reject events whose size differs from theirs.
        block_size: BlockSize,
        /// The stored blocks, in sequence order.
        blocks: Vec<HashedBlock>,
    },
    /// Blocks were evicted or freed.
    Removed {
        /// The sequence hashes of the removed blocks.
        blocks: Vec<SequenceHash>,
    },
    /// Every block of the worker in this tier was dropped.
    Cleared,
    /// Every block the worker holds in this tier now, replacing whatever was known of it: the
    /// answer to a [`ResyncRequest`] (see [`KvPublisher::snapshot`](crate::KvPublisher)).
    /// The blocks are not a chain; each is known by its sequence hash.
    Snapshot {
        /// The engine's block size; consumers reject events whose size differs from theirs.
        block_size: BlockSize,
        /// The held blocks, in no particular order.
        blocks: Vec<HashedBlock>,
    },
}

/// A consumer of a worker's KV events missed some (a gap in its event ids) and asks the worker
/// for a [`KvEventData::Snapshot`] of its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequest {
    /// The worker whose events were missed.
    pub worker: WorkerId,
    /// The first event id that was not seen.
    pub expected: u64,
    /// The event id that revealed the gap.
    pub received: u64,
}

/// One change to one worker's KV cache.
///
/// `event_id` increases by one per event of a worker; a consumer that sees a gap has missed
/// events and must resynchronise from a snapshot.
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
///
/// let block_size = BlockSize::new(4)?;
/// let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4]);
/// let event = KvEvent {
///     worker: WorkerId::new(1),
///     event_id: 0,
///     tier: StorageTier::Device,
///     data: KvEventData::Stored { parent: None, block_size, blocks },
/// };
/// assert_eq!(event.block_count(), 1);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// The worker whose cache changed.
    pub worker: WorkerId,
    /// The worker's event counter, increasing by one per event.
    pub event_id: u64,
    /// The tier the change happened in.
    #[serde(default)]
    pub tier: StorageTier,
    /// The change.
    pub data: KvEventData,
}

impl KvEvent {
    /// How many blocks the event stores, removes or lists (0 for [`KvEventData::Cleared`]).
    pub fn block_count(&self) -> usize {
        match &self.data {
            KvEventData::Stored { blocks, .. } | KvEventData::Snapshot { blocks, .. } => {
                blocks.len()
            }
            KvEventData::Removed { blocks } => blocks.len(),
            KvEventData::Cleared => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::LocalBlockHash;

    #[test]
    fn events_have_a_readable_json_form() {
        let event = KvEvent {
            worker: WorkerId::new(3).with_dp_rank(1),
            event_id: 9,
            tier: StorageTier::Host,
            data: KvEventData::Stored {
                parent: Some(SequenceHash(5)),
                block_size: BlockSize::new(16).unwrap(),
                blocks: vec![HashedBlock {
                    local: LocalBlockHash(6),
                    sequence: SequenceHash(7),
                }],
            },
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"worker":{"worker":3,"dp_rank":1},"event_id":9,"tier":"host","data":{"stored":{"parent":5,"block_size":16,"blocks":[{"local":6,"sequence":7}]}}}"#
        );
        let back: KvEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        let cleared: KvEvent =
            serde_json::from_str(r#"{"worker":{"worker":1},"event_id":0,"data":"cleared"}"#)
                .unwrap();
        assert_eq!(cleared.tier, StorageTier::Device);
        assert_eq!(cleared.block_count(), 0);
    }
}
