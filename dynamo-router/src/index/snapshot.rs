//! Dumping an index and building a replica from the dump.

use std::collections::BTreeMap;

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, LocalBlockHash, SequenceHash, StorageTier,
    WorkerId,
};
use serde::{Deserialize, Serialize};

use super::residents::{slot_of, tier_bit, tiers_of};
use super::{IndexError, KvIndex};

/// Everything one worker holds, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// The worker.
    pub worker: WorkerId,
    /// The id the worker's next event should carry, if any event was applied.
    pub next_event_id: Option<u64>,
    /// The sequence hashes the worker holds, per tier.
    pub blocks: BTreeMap<StorageTier, Vec<SequenceHash>>,
}

/// A dump of a whole index, for replicas and for resynchronising after a restart.
///
/// [`KvIndex::restore`] rebuilds an identical index from it. For consumers that speak only
/// events, [`IndexSnapshot::to_events`] turns it into an event stream with the same content.
/// The index keeps only sequence hashes (that is what keeps it small), so the dump lists held
/// blocks per worker and tier; the engines' parent links and local hashes are not in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSnapshot {
    /// The block size of the index.
    pub block_size: BlockSize,
    /// Every worker the index knows, including workers that hold nothing.
    pub workers: Vec<WorkerSnapshot>,
}

impl KvIndex {
    /// Dump the index.
    pub fn snapshot(&self) -> IndexSnapshot {
        let mut by_slot: BTreeMap<u32, WorkerSnapshot> = self
            .workers
            .slots()
            .map(|(slot, worker, next_event_id)| {
                let snapshot = WorkerSnapshot {
                    worker,
                    next_event_id,
                    blocks: BTreeMap::new(),
                };
                (slot, snapshot)
            })
            .collect();
        for (hashes, residents) in self.runs.live() {
            for &resident in residents {
                let Some(worker) = by_slot.get_mut(&slot_of(resident)) else {
                    continue;
                };
                for tier in StorageTier::ALL {
                    if tiers_of(resident) & tier_bit(tier) != 0 {
                        worker
                            .blocks
                            .entry(tier)
                            .or_default()
                            .extend_from_slice(hashes);
                    }
                }
            }
        }
        let mut workers: Vec<WorkerSnapshot> = by_slot.into_values().collect();
        for worker in &mut workers {
            worker
                .blocks
                .values_mut()
                .for_each(|hashes| hashes.sort_unstable());
        }
        IndexSnapshot {
            block_size: self.block_size,
            workers,
        }
    }

    /// Build an index from a dump.
    ///
    /// # Errors
    ///
    /// [`IndexError::TooManyWorkers`] if the dump names more workers than an index can track.
    pub fn restore(snapshot: &IndexSnapshot) -> Result<KvIndex, IndexError> {
        let mut index = KvIndex::new(snapshot.block_size);
        for worker in &snapshot.workers {
            let slot = index.workers.slot_or_insert(worker.worker)?;
            if let Some(next) = worker.next_event_id {
                index.workers.set_next_event_id(slot, next);
            }
            for (&tier, hashes) in &worker.blocks {
                index.insert_all(slot, tier_bit(tier), hashes.iter().copied());
            }
        }
        Ok(index)
    }
}

impl IndexSnapshot {
    /// The dump as events: for each worker and tier it holds blocks in, a `Cleared`, then one
    /// `Stored` per block with no parent. Applied to an empty [`KvIndex`] of the same block
    /// size, they give the same overlaps as the dumped index.
    ///
    /// Each worker's events are numbered so that the last one is just below the worker's
    /// `next_event_id` (from 0 when there are more events than that), so that the worker's live
    /// events continue the stream without a gap. Local hashes are not kept by the index: each
    /// block's local hash is set to its sequence hash.
    pub fn to_events(&self) -> Vec<KvEvent> {
        let mut events = Vec::new();
        for worker in &self.workers {
            let count: u64 = worker
                .blocks
                .values()
                .map(|hashes| 1 + hashes.len() as u64)
                .sum();
            let first_id = worker
                .next_event_id
                .map_or(0, |next| next.saturating_sub(count));
            let mut event_id = first_id;
            let mut push = |tier, data| {
                events.push(KvEvent {
                    worker: worker.worker,
                    event_id,
                    tier,
                    data,
                });
                event_id += 1;
            };
            for (&tier, hashes) in &worker.blocks {
                push(tier, KvEventData::Cleared);
                for &sequence in hashes {
                    let block = HashedBlock {
                        local: LocalBlockHash(sequence.0),
                        sequence,
                    };
                    push(
                        tier,
                        KvEventData::Stored {
                            parent: None,
                            block_size: self.block_size,
                            blocks: vec![block],
                        },
                    );
                }
            }
        }
        events
    }
}
