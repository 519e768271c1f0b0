//! The SGLang/SMG gateway's `ChainIndex` (`kv-index` 2.0.0): block chains stored as runs of
//! positions with a per-run worker bitset, read lock-free; each worker's lane keeps a map from
//! engine block hash to (run, offset).

use dynamo_core::{KvEvent, KvEventData, LocalBlockHash, SequenceHash};
use kv_index::{ChainBlockMap, ChainIndex, ContentHash, OverlapScores, StoredBlock};

use crate::bench::Indexer;

/// One event in `kv-index`'s vocabulary: the interned worker id and the arguments of
/// `apply_stored`, `apply_removed` or `apply_cleared`.
pub enum ChainEvent {
    Stored {
        worker: u32,
        parent: Option<kv_index::SequenceHash>,
        blocks: Vec<StoredBlock>,
    },
    Removed {
        worker: u32,
        hashes: Vec<kv_index::SequenceHash>,
    },
    Cleared {
        worker: u32,
    },
}

/// [`ChainIndex::apply_stored`], [`ChainIndex::apply_removed`], [`ChainIndex::apply_cleared`]
/// with one [`ChainBlockMap`] per worker (the lane maps the gateway's event monitor owns; held
/// here and counted in the footprint), and [`ChainIndex::find_matches`] with
/// `early_exit = false`. The index is sized for exactly the bench's workers
/// ([`ChainIndex::with_max_workers`]); workers are interned up front. A block's `content_hash`
/// is our local hash and its `seq_hash` our sequence hash; a query is its blocks' local hashes.
pub struct KvIndexChain {
    index: ChainIndex,
    maps: Vec<ChainBlockMap>,
    /// Interned id of each bench worker, and back.
    ids: Vec<u32>,
    workers: Vec<u64>,
}

impl Indexer for KvIndexChain {
    type Event = ChainEvent;
    type Query = Vec<ContentHash>;
    type Answer = OverlapScores;

    const NAME: &'static str = "kv-index ChainIndex";

    fn new(workers: u64) -> Self {
        let index = ChainIndex::with_max_workers(workers as usize);
        let ids: Vec<u32> = (0..workers)
            .map(|w| {
                index
                    .intern_worker(&format!("worker-{w}"))
                    .expect("the index is sized for every worker")
            })
            .collect();
        let mut back = vec![0; ids.len()];
        for (worker, &id) in ids.iter().enumerate() {
            back[id as usize] = worker as u64;
        }
        KvIndexChain {
            index,
            maps: (0..workers).map(|_| ChainBlockMap::new()).collect(),
            ids,
            workers: back,
        }
    }

    fn event(&self, event: &KvEvent) -> ChainEvent {
        let worker = self.ids[event.worker.worker as usize];
        match &event.data {
            KvEventData::Stored { parent, blocks, .. } => ChainEvent::Stored {
                worker,
                parent: parent.map(|hash| kv_index::SequenceHash(hash.0)),
                blocks: blocks
                    .iter()
                    .map(|block| StoredBlock {
                        seq_hash: kv_index::SequenceHash(block.sequence.0),
                        content_hash: ContentHash(block.local.0),
                    })
                    .collect(),
            },
            KvEventData::Removed { blocks } => ChainEvent::Removed {
                worker,
                hashes: blocks
                    .iter()
                    .map(|hash| kv_index::SequenceHash(hash.0))
                    .collect(),
            },
            KvEventData::Cleared => ChainEvent::Cleared { worker },
            _ => unreachable!("the generator emits stores, removals and clears only"),
        }
    }

    fn query(&self, _sequence: &[SequenceHash], local: &[LocalBlockHash]) -> Vec<ContentHash> {
        local.iter().map(|hash| ContentHash(hash.0)).collect()
    }

    fn apply(&mut self, event: &mut ChainEvent) -> bool {
        match event {
            ChainEvent::Stored {
                worker,
                parent,
                blocks,
            } => {
                let map = &mut self.maps[*worker as usize];
                self.index
                    .apply_stored(*worker, blocks, *parent, map)
                    .is_ok()
            }
            ChainEvent::Removed { worker, hashes } => {
                let map = &mut self.maps[*worker as usize];
                self.index.apply_removed(*worker, hashes, map);
                true
            }
            ChainEvent::Cleared { worker } => {
                let map = &mut self.maps[*worker as usize];
                self.index.apply_cleared(*worker, map);
                true
            }
        }
    }

    fn lookup(&self, query: &mut Vec<ContentHash>) -> OverlapScores {
        self.index.find_matches(query, false)
    }

    fn depths(&self, answer: &OverlapScores, out: &mut Vec<(u64, u32)>) {
        out.extend(
            answer
                .scores
                .iter()
                .filter(|&(_, &depth)| depth > 0)
                .map(|(&id, &depth)| (self.workers[id as usize], depth)),
        );
    }
}
