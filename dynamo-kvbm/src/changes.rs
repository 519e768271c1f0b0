//! The KV events of a pool or a tier, built as few and as long as they can be.

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash};

/// Record that `block`, following `parent`, was stored: appended to the last `Stored` event
/// when it continues that event's chain, else as a new one.
pub(crate) fn record_stored(
    events: &mut Vec<KvEventData>,
    block_size: BlockSize,
    parent: Option<SequenceHash>,
    block: HashedBlock,
) {
    if let Some(KvEventData::Stored { blocks, .. }) = events.last_mut()
        && parent.is_some()
        && blocks.last().map(|b| b.sequence) == parent
    {
        blocks.push(block);
        return;
    }
    events.push(KvEventData::Stored {
        parent,
        block_size,
        blocks: vec![block],
    });
}

/// Record that `hash` was removed: appended to the last event when it is a `Removed`, else as
/// a new one.
pub(crate) fn record_removed(events: &mut Vec<KvEventData>, hash: SequenceHash) {
    match events.last_mut() {
        Some(KvEventData::Removed { blocks }) => blocks.push(hash),
        _ => events.push(KvEventData::Removed { blocks: vec![hash] }),
    }
}
