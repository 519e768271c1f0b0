//! NVIDIA Dynamo's `PositionalIndexer` (`dynamo-kv-router` 1.6.1): a concurrent map from
//! (position, local hash) to the workers holding that block, searched by strided jumps.

use dynamo_core::{KvEvent, LocalBlockHash as DynamoCoreLocal, SequenceHash};
use dynamo_kv_router::indexer::SyncIndexer;
use dynamo_kv_router::indexer::positional::{LevelIndex, PositionalIndexer, SearchMode};
use dynamo_kv_router::protocols::{LocalBlockHash, OverlapScores, RouterEvent, WorkerWithDpRank};
use rustc_hash::FxHashMap;

use crate::bench::Indexer;

/// The jump of the strided search, as Dynamo's own tests configure it.
const JUMP: usize = 32;

/// The synchronous core a `ThreadPoolIndexer` lane drives: [`PositionalIndexer::apply_event`]
/// with the lane's per-worker block map (held here, and counted in the footprint), and
/// [`SyncIndexer::find_matches`] with [`SearchMode::Strided`], the default, and
/// `early_exit = false`.
pub struct DynamoPositional {
    index: PositionalIndexer,
    worker_blocks: FxHashMap<WorkerWithDpRank, LevelIndex>,
}

impl Indexer for DynamoPositional {
    type Event = Option<RouterEvent>;
    type Query = Vec<LocalBlockHash>;
    type Answer = OverlapScores;

    const NAME: &'static str = "dynamo-kv-router PositionalIndexer";

    fn new(_workers: u64) -> Self {
        DynamoPositional {
            index: PositionalIndexer::new_with_mode(JUMP, SearchMode::Strided),
            worker_blocks: FxHashMap::default(),
        }
    }

    fn event(&self, event: &KvEvent) -> Option<RouterEvent> {
        Some(super::router_event(event))
    }

    fn query(&self, _sequence: &[SequenceHash], local: &[DynamoCoreLocal]) -> Vec<LocalBlockHash> {
        super::local_hashes(local)
    }

    fn apply(&mut self, event: &mut Option<RouterEvent>) -> bool {
        let event = event.take().expect("each event is applied once");
        self.index
            .apply_event(&mut self.worker_blocks, event, None)
            .is_ok()
    }

    fn lookup(&self, query: &mut Vec<LocalBlockHash>) -> OverlapScores {
        self.index.find_matches(query, false)
    }

    fn depths(&self, answer: &OverlapScores, out: &mut Vec<(u64, u32)>) {
        super::dynamo_depths(answer, out);
    }
}
