//! NVIDIA Dynamo's `RadixTree` (`dynamo-kv-router` 1.6.1): a single-threaded compressed radix
//! tree over local (content) hashes, with a per-worker map from block hash to tree node for
//! removals and parent lookups.

use dynamo_core::{KvEvent, LocalBlockHash as DynamoCoreLocal, SequenceHash};
use dynamo_kv_router::RadixTree;
use dynamo_kv_router::protocols::{LocalBlockHash, OverlapScores, RouterEvent};

use crate::bench::Indexer;

/// The synchronous core the `KvIndexer` tokio task wraps: [`RadixTree::apply_event`] and
/// [`RadixTree::find_matches`] (`early_exit = false`, so every worker gets its full depth).
/// Both take their input by value; the adapter moves the pre-built event or query in.
pub struct DynamoRadix {
    tree: RadixTree,
}

impl Indexer for DynamoRadix {
    type Event = Option<RouterEvent>;
    type Query = Vec<LocalBlockHash>;
    type Answer = OverlapScores;

    const NAME: &'static str = "dynamo-kv-router RadixTree";

    fn new(_workers: u64) -> Self {
        DynamoRadix {
            tree: RadixTree::new(),
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
        self.tree.apply_event(event).is_ok()
    }

    fn lookup(&self, query: &mut Vec<LocalBlockHash>) -> OverlapScores {
        self.tree.find_matches(std::mem::take(query), false)
    }

    fn depths(&self, answer: &OverlapScores, out: &mut Vec<(u64, u32)>) {
        super::dynamo_depths(answer, out);
    }
}
