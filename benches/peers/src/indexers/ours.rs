//! `dynamo_router::KvIndex`: one hash map from sequence hash to the workers holding the block;
//! a lookup intersects the resident lists of the request's blocks in order.

use dynamo_core::{BlockSize, KvEvent, LocalBlockHash, SequenceHash};
use dynamo_router::{KvIndex, Overlaps};

use crate::bench::Indexer;
use crate::stream::{BLOCK_TOKENS, Stream};

/// The (worker, block) pairs our index holds after the whole stream: a cross-check of the
/// reference model's count, which divides every footprint.
pub fn resident_pairs(stream: &Stream) -> u64 {
    let mut ours = Ours::new(stream.workers);
    for event in stream.events() {
        ours.apply(&mut event.clone());
    }
    ours.index.resident_blocks()
}

/// Our index, through its public API: [`KvIndex::apply`] and [`KvIndex::overlaps`].
pub struct Ours {
    index: KvIndex,
}

impl Indexer for Ours {
    type Event = KvEvent;
    type Query = Vec<SequenceHash>;
    type Answer = Overlaps;

    const NAME: &'static str = "dynamo-router KvIndex (ours)";

    fn new(_workers: u64) -> Self {
        let block_size = BlockSize::new(BLOCK_TOKENS).expect("a non-zero block size");
        Ours {
            index: KvIndex::new(block_size),
        }
    }

    fn event(&self, event: &KvEvent) -> KvEvent {
        event.clone()
    }

    fn query(&self, sequence: &[SequenceHash], _local: &[LocalBlockHash]) -> Vec<SequenceHash> {
        sequence.to_vec()
    }

    fn apply(&mut self, event: &mut KvEvent) -> bool {
        self.index.apply(event).is_ok()
    }

    fn lookup(&self, query: &mut Vec<SequenceHash>) -> Overlaps {
        self.index.overlaps(query)
    }

    fn depths(&self, answer: &Overlaps, out: &mut Vec<(u64, u32)>) {
        out.extend(
            answer
                .iter()
                .filter(|(_, overlap)| overlap.total() > 0)
                .map(|(worker, overlap)| (worker.worker, overlap.total())),
        );
    }
}
