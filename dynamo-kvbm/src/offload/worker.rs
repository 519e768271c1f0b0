//! [`OffloadWorker`]: writes the blocks the first tier evicts to the tiers below it, in batches.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use dynamo_core::SequenceHash;

use super::{Queued, Shared};
use crate::Offer;

/// The background half of [`LowerTiers`](super::LowerTiers): it takes the blocks the first
/// tier evicted from the bounded queue, up to a batch at a time, and writes them to the second
/// tier with one [`put_many`](crate::BlockStore::put_many); the blocks the second tier evicts
/// for them go to the third in the same way, and so on down.
///
/// Run it on a thread that may block (its stores' I/O does): `std::thread::spawn(move ||
/// worker.run())`. It returns once every [`LowerTiers`](super::LowerTiers) handle is dropped and
/// the queue is empty.
#[derive(Debug)]
pub struct OffloadWorker {
    shared: Arc<Shared>,
    queue: Receiver<Queued>,
    batch_blocks: usize,
}

impl OffloadWorker {
    pub(super) fn new(shared: Arc<Shared>, queue: Receiver<Queued>, batch_blocks: usize) -> Self {
        OffloadWorker {
            shared,
            queue,
            batch_blocks: batch_blocks.max(1),
        }
    }

    /// Write queued blocks until every handle of the tiers is dropped.
    pub fn run(self) {
        while let Ok(first) = self.queue.recv() {
            let mut batch = vec![first];
            while batch.len() < self.batch_blocks {
                match self.queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let taken = batch.len();
            self.store(1, batch);
            self.shared.lock().counters.queue_depth -= taken;
            self.shared.drained.notify_all();
        }
    }

    /// Offer `batch` to tier `tier` and write what it takes; pass what it evicts further down.
    fn store(&self, tier: usize, batch: Vec<Queued>) {
        let Some(store) = self.shared.stores.get(tier) else {
            return;
        };
        let has_next = tier + 1 < self.shared.stores.len();
        let mut victims = Vec::new();
        // Blocks of the batch the tier stored, and which of them (and of the victims) it still
        // holds once the whole batch is offered: a small tier may evict a block of this very
        // batch for a later one, or a block it held for one it held before.
        let mut stored = Vec::with_capacity(batch.len());
        let (accepted, victims_held) = {
            let mut state = self.shared.lock();
            let index = &mut state.indexes[tier];
            for (at, queued) in batch.iter().enumerate() {
                if index.offer(queued.block.block, queued.block.parent, &mut victims)
                    == Offer::Stored
                {
                    stored.push(at);
                }
            }
            let mut once = HashSet::new();
            let accepted: Vec<usize> = stored
                .iter()
                .copied()
                .filter(|&at| {
                    let hash = batch[at].block.block.sequence;
                    index.contains(hash) && once.insert(hash)
                })
                .collect();
            let held: Vec<bool> = victims
                .iter()
                .map(|victim| index.contains(victim.block.sequence))
                .collect();
            (accepted, held)
        };
        let mut down = Vec::new();
        let mut passed = HashSet::new();
        for (victim, still_held) in victims.into_iter().zip(victims_held) {
            let hash = victim.block.sequence;
            if !passed.insert(hash) {
                continue;
            }
            if has_next {
                // A block of this batch was never written here: its bytes are the batch's.
                let from_batch = stored
                    .iter()
                    .find(|&&at| batch[at].block.block.sequence == hash);
                let bytes = match from_batch {
                    Some(&at) => Some(batch[at].bytes.clone()),
                    None => {
                        let mut bytes = vec![0; self.shared.block_bytes];
                        matches!(store.get(hash, &mut bytes), Ok(true)).then_some(bytes)
                    }
                };
                if let Some(bytes) = bytes {
                    down.push(Queued {
                        block: victim,
                        bytes,
                    });
                }
            }
            if !still_held && let Err(error) = store.remove(hash) {
                tracing::warn!(%error, "removing an evicted block from a lower tier");
            }
        }
        let writes: Vec<(SequenceHash, &[u8])> = accepted
            .iter()
            .map(|&at| (batch[at].block.block.sequence, batch[at].bytes.as_slice()))
            .collect();
        let result = store.put_many(&writes);
        let mut state = self.shared.lock();
        let mut written = writes.len();
        if let Err(error) = result {
            tracing::warn!(%error, "offloading blocks to a lower tier");
            for &(hash, _) in &writes {
                if !store.contains(hash) {
                    state.indexes[tier].remove(hash);
                    state.counters.failed_writes += 1;
                    written -= 1;
                }
            }
        }
        state.counters.tiers[tier].add_offloaded(written, written * self.shared.block_bytes);
        drop(state);
        if !down.is_empty() {
            self.store(tier + 1, down);
        }
    }
}
