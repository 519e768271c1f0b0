//! Simulated workers' KV caches that report what they store and evict, as engines do: the KV
//! events of the decision bench on a `SharedIndex` and of the allocation test that measures the
//! same workload.

use std::collections::{BTreeMap, HashMap};

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, LocalBlockHash, SequenceHash, StorageTier,
    WorkerId,
};

/// One worker's cache: its blocks by last use, and its next event id.
#[derive(Default)]
struct WorkerCache {
    used_at: HashMap<SequenceHash, u64>,
    by_use: BTreeMap<u64, SequenceHash>,
    next_event_id: u64,
}

/// The caches of workers `0..workers`, each an LRU of `capacity` blocks, on one clock of uses.
pub(crate) struct WorkerCaches {
    workers: Vec<WorkerCache>,
    tick: u64,
    capacity: usize,
    block_size: BlockSize,
}

impl WorkerCaches {
    /// Empty caches of `capacity` blocks for workers `0..workers`.
    pub(crate) fn new(workers: u64, capacity: usize, block_size: BlockSize) -> Self {
        WorkerCaches {
            workers: (0..workers).map(|_| WorkerCache::default()).collect(),
            tick: 0,
            capacity,
            block_size,
        }
    }

    /// `worker` ran a prompt of `blocks`: the events it reports, a store for each stretch of
    /// blocks it did not hold (continuing the block before it), then its evictions, least
    /// recently used first, down to its capacity.
    ///
    /// # Panics
    ///
    /// If `worker` is not one of the caches' workers.
    pub(crate) fn run(&mut self, worker: WorkerId, blocks: &[SequenceHash]) -> Vec<KvEvent> {
        let block_size = self.block_size;
        let stored = |parent, blocks| KvEventData::Stored {
            parent,
            block_size,
            blocks,
        };
        let cache = &mut self.workers[worker.worker as usize];
        let mut datas = Vec::new();
        let mut stretch: Vec<HashedBlock> = Vec::new();
        let mut parent = None;
        for (at, &hash) in blocks.iter().enumerate() {
            self.tick += 1;
            cache.by_use.insert(self.tick, hash);
            if let Some(old) = cache.used_at.insert(hash, self.tick) {
                cache.by_use.remove(&old);
                if !stretch.is_empty() {
                    datas.push(stored(parent, std::mem::take(&mut stretch)));
                }
                continue;
            }
            if stretch.is_empty() {
                parent = at.checked_sub(1).map(|p| blocks[p]);
            }
            stretch.push(HashedBlock {
                local: LocalBlockHash(hash.0),
                sequence: hash,
            });
        }
        if !stretch.is_empty() {
            datas.push(stored(parent, stretch));
        }
        let mut evicted = Vec::new();
        while cache.used_at.len() > self.capacity {
            let Some((_, hash)) = cache.by_use.pop_first() else {
                break;
            };
            cache.used_at.remove(&hash);
            evicted.push(hash);
        }
        if !evicted.is_empty() {
            datas.push(KvEventData::Removed { blocks: evicted });
        }
        datas
            .into_iter()
            .map(|data| {
                cache.next_event_id += 1;
                KvEvent {
                    worker,
                    event_id: cache.next_event_id - 1,
                    tier: StorageTier::Device,
                    data,
                }
            })
            .collect()
    }

    /// The blocks every worker holds, together.
    pub(crate) fn held(&self) -> usize {
        self.workers.iter().map(|w| w.used_at.len()).sum()
    }
}
