//! What a TensorRT-LLM events decoder has seen and done: [`EventCounts`].

/// What a decoder has seen and done, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCounts {
    /// Events read (each element of an answer that parsed as an event).
    pub events: u64,
    /// Router events produced.
    pub applied: u64,
    /// Jumps in the event ids ([`EventsError::Lost`](super::EventsError::Lost)).
    pub gaps: u64,
    /// Event ids those jumps skipped.
    pub lost: u64,
    /// Times the event ids went back (the server restarted): what was known of it was
    /// cleared.
    pub restarts: u64,
    /// Events of a `type` this decoder does not know, skipped.
    pub unknown_types: u64,
    /// `updated` events that moved no block between tiers (a priority change, or a cache
    /// level the block was already known at), skipped.
    pub updated: u64,
    /// `updated` events that moved a block between cache levels: each made a `Stored` of the
    /// block in its new level's tier and a `Removed` in its old one.
    pub moved: u64,
    /// `updated` events of a cache level for a block never seen stored (stored before the
    /// poller started, or in lost events), skipped.
    pub unknown_updated: u64,
    /// Blocks at a cache level with no tier here (not 0, 1 or 2): a `stored` chain is indexed
    /// up to the first such block, and a block moved to such a level is removed from its
    /// tier and forgotten.
    pub unknown_levels: u64,
    /// Events of another attention window or layer group than the first one seen, skipped.
    pub other_groups: u64,
    /// `stored` events whose parent block was never seen stored (stored before the poller
    /// started, or in lost events), skipped.
    pub unknown_parent: u64,
    /// Removed block hashes never seen stored, ignored.
    pub unknown_removed: u64,
    /// Known blocks removed with an ancestor, a `removed` block or one moved to a cache level
    /// with no tier, without being named themselves: TensorRT-LLM's KV cache manager frees a
    /// reclaimed block's descendants with it, and since its lookup-tree rewrite (2026) sends
    /// no `removed` event for them.
    pub descendants_removed: u64,
    /// Partly filled last blocks of `stored` events, not indexed (the router indexes full
    /// blocks).
    pub partial_blocks: u64,
    /// `stored` blocks with multimodal tokens (`token_extra_id` set), not indexed: the router
    /// hashes token ids only.
    pub multimodal_blocks: u64,
    /// `stored` events skipped because the decoder already remembers its maximum of blocks.
    pub over_capacity: u64,
    /// Answers or events that did not parse
    /// ([`EventsError::Malformed`](super::EventsError::Malformed)).
    pub malformed: u64,
    /// `stored` events of another block size
    /// ([`EventsError::BlockSizeMismatch`](super::EventsError::BlockSizeMismatch)).
    pub block_size_mismatches: u64,
}
