//! One adapter per indexer, each putting its API behind [`crate::bench::Indexer`].

pub mod diag;
pub mod dynamo_crtc;
pub mod dynamo_positional;
pub mod dynamo_radix;
pub mod kv_index_chain;
pub mod ours;

use dynamo_core::{KvEvent, KvEventData};
use dynamo_kv_router::protocols::{
    ExternalSequenceBlockHash, KvCacheEvent, KvCacheEventData, KvCacheRemoveData, KvCacheStoreData,
    KvCacheStoredBlockData, LocalBlockHash, OverlapScores, RouterEvent,
};

/// `event` as NVIDIA Dynamo's `RouterEvent` (device tier, dp rank 0), shared by the three
/// `dynamo-kv-router` adapters. A block's `tokens_hash` is our local hash (in this stream equal
/// to its sequence hash, since every trace `hash_id` names one prefix block) and its
/// `block_hash` our sequence hash. `start_position` is left out, as our events carry none: the
/// indexers place a store after its parent.
fn router_event(event: &KvEvent) -> RouterEvent {
    let data = match &event.data {
        KvEventData::Stored { parent, blocks, .. } => KvCacheEventData::Stored(KvCacheStoreData {
            parent_hash: parent.map(|hash| ExternalSequenceBlockHash(hash.0)),
            start_position: None,
            blocks: blocks
                .iter()
                .map(|block| KvCacheStoredBlockData {
                    block_hash: ExternalSequenceBlockHash(block.sequence.0),
                    tokens_hash: LocalBlockHash(block.local.0),
                    mm_extra_info: None,
                })
                .collect(),
        }),
        KvEventData::Removed { blocks } => KvCacheEventData::Removed(KvCacheRemoveData {
            block_hashes: blocks
                .iter()
                .map(|hash| ExternalSequenceBlockHash(hash.0))
                .collect(),
        }),
        KvEventData::Cleared => KvCacheEventData::Cleared,
        _ => unreachable!("the generator emits stores, removals and clears only"),
    };
    RouterEvent::new(
        event.worker.worker,
        KvCacheEvent {
            event_id: event.event_id,
            data,
            dp_rank: event.worker.dp_rank,
        },
    )
}

/// A request as Dynamo's query: the local (content) hash of each block.
fn local_hashes(hashes: &[dynamo_core::LocalBlockHash]) -> Vec<LocalBlockHash> {
    hashes.iter().map(|hash| LocalBlockHash(hash.0)).collect()
}

/// Dynamo's `OverlapScores` as (worker, depth) pairs.
fn dynamo_depths(scores: &OverlapScores, out: &mut Vec<(u64, u32)>) {
    out.extend(
        scores
            .scores
            .iter()
            .filter(|&(_, &depth)| depth > 0)
            .map(|(worker, &depth)| (worker.worker_id, depth)),
    );
}
