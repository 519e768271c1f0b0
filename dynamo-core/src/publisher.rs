//! How an engine reports its KV cache: events stamped with consecutive ids, and a snapshot of
//! what they describe whenever a consumer has lost track.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::events::{KvEvent, KvEventData, StorageTier, WorkerId};
use crate::hash::{HashedBlock, SequenceHash};
use crate::tokens::BlockSize;

/// An engine's KV event publisher: it stamps each change with the worker's next event id,
/// sends it on a bounded channel, and keeps the blocks the events describe, so that it can
/// answer a [`ResyncRequest`](crate::ResyncRequest) with a [`snapshot`](Self::snapshot).
///
/// **A full channel drops the event** (counted in [`dropped`](Self::dropped)) rather than
/// stalling the engine: the consumer sees the gap in event ids, asks for a resync, and the
/// snapshot, sent in order with the other events, puts it right.
///
/// Clones share the publisher: the engine's worker publishes, and whoever hears resync
/// requests (a transport, say) calls `snapshot` on its clone.
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize, KvEventData, KvPublisher, StorageTier, WorkerId};
///
/// let block_size = BlockSize::new(4)?;
/// let (sender, mut events) = tokio::sync::mpsc::channel(1);
/// let publisher = KvPublisher::new(WorkerId::new(1), block_size, Some(sender));
/// let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
/// let stored = |blocks: &[_]| KvEventData::Stored { parent: None, block_size, blocks: blocks.to_vec() };
///
/// publisher.publish(StorageTier::Device, stored(&blocks[..1]));
/// publisher.publish(StorageTier::Device, stored(&blocks[1..])); // the channel is full: dropped
/// assert_eq!(publisher.dropped(), 1);
/// assert_eq!(events.try_recv()?.event_id, 0);
///
/// // The consumer saw id 0 and will see id 2 next: it asks for a snapshot, which lists both.
/// publisher.snapshot();
/// let snapshot = events.try_recv()?;
/// assert_eq!(snapshot.event_id, 2);
/// assert_eq!(snapshot.block_count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvPublisher {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    worker: WorkerId,
    block_size: BlockSize,
    sender: Option<mpsc::Sender<KvEvent>>,
    next_event_id: u64,
    held: HashMap<StorageTier, HashMap<SequenceHash, HashedBlock>>,
    dropped: u64,
}

impl KvPublisher {
    /// A publisher for `worker`'s blocks of `block_size` tokens, sending on `events`; with
    /// `None`, nothing is sent or kept (nobody reads the events).
    pub fn new(
        worker: WorkerId,
        block_size: BlockSize,
        events: Option<mpsc::Sender<KvEvent>>,
    ) -> Self {
        KvPublisher {
            state: Arc::new(Mutex::new(State {
                worker,
                block_size,
                sender: events,
                next_event_id: 0,
                held: HashMap::new(),
                dropped: 0,
            })),
        }
    }

    /// The worker whose events these are.
    pub fn worker(&self) -> WorkerId {
        self.lock().worker
    }

    /// Record `change` in `tier` and send it with the next event id.
    pub fn publish(&self, tier: StorageTier, change: KvEventData) {
        self.lock().publish(tier, change);
    }

    /// [`publish`](Self::publish) each change in order, under one lock.
    pub fn publish_all(&self, tier: StorageTier, changes: impl IntoIterator<Item = KvEventData>) {
        let mut state = self.lock();
        for change in changes {
            state.publish(tier, change);
        }
    }

    /// Send a [`KvEventData::Snapshot`] of every tier the worker has published about (the
    /// device tier at least), with the next event ids: what the worker holds now, replacing
    /// what a consumer knew.
    pub fn snapshot(&self) {
        let mut state = self.lock();
        let used: Vec<StorageTier> = StorageTier::ALL
            .into_iter()
            .filter(|tier| *tier == StorageTier::Device || state.held.contains_key(tier))
            .collect();
        for tier in used {
            let blocks = state
                .held
                .get(&tier)
                .map(|held| held.values().copied().collect())
                .unwrap_or_default();
            let block_size = state.block_size;
            state.send(tier, KvEventData::Snapshot { block_size, blocks });
        }
    }

    /// Events dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn publish(&mut self, tier: StorageTier, change: KvEventData) {
        if self.sender.is_none() {
            return;
        }
        let held = self.held.entry(tier).or_default();
        match &change {
            KvEventData::Stored { blocks, .. } => {
                held.extend(blocks.iter().map(|block| (block.sequence, *block)));
            }
            KvEventData::Removed { blocks } => {
                for hash in blocks {
                    held.remove(hash);
                }
            }
            KvEventData::Cleared => held.clear(),
            KvEventData::Snapshot { blocks, .. } => {
                held.clear();
                held.extend(blocks.iter().map(|block| (block.sequence, *block)));
            }
        }
        self.send(tier, change);
    }

    fn send(&mut self, tier: StorageTier, data: KvEventData) {
        let Some(sender) = &self.sender else {
            return;
        };
        let event = KvEvent {
            worker: self.worker,
            event_id: self.next_event_id,
            tier,
            data,
        };
        // The id is spent even when the event is dropped: that is the gap consumers see.
        self.next_event_id += 1;
        if sender.try_send(event).is_err() {
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hash::BlockHasher;

    proptest! {
        /// Whatever was dropped, the last snapshot lists exactly the blocks the published
        /// changes leave the worker holding.
        #[test]
        fn a_snapshot_lists_what_the_changes_leave(
            ops in proptest::collection::vec((any::<bool>(), 0u32..12), 1..80),
            capacity in 1usize..8,
        ) {
            let block_size = BlockSize::new(2).unwrap();
            let hasher = BlockHasher::new(block_size);
            let (sender, mut events) = mpsc::channel(capacity);
            let publisher = KvPublisher::new(WorkerId::new(1), block_size, Some(sender));
            let mut held = std::collections::BTreeSet::new();
            for (store, n) in ops {
                let block = hasher.hash_blocks(&[n, n])[0];
                if store {
                    held.insert(block.sequence);
                    publisher.publish(StorageTier::Device, KvEventData::Stored {
                        parent: None, block_size, blocks: vec![block],
                    });
                } else {
                    held.remove(&block.sequence);
                    publisher.publish(StorageTier::Device, KvEventData::Removed {
                        blocks: vec![block.sequence],
                    });
                }
                // A slow consumer: read one event now and then.
                if n % 3 == 0 {
                    let _ = events.try_recv();
                }
            }
            while events.try_recv().is_ok() {}
            publisher.snapshot();
            let device = events.try_recv().unwrap();
            prop_assert_eq!(device.tier, StorageTier::Device);
            let KvEventData::Snapshot { blocks, .. } = device.data else {
                panic!("a snapshot");
            };
            let listed: std::collections::BTreeSet<_> = blocks.iter().map(|b| b.sequence).collect();
            prop_assert_eq!(listed, held);
        }
    }
}
