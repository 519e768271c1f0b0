//! TensorRT-LLM's KV events, turned into the router's [`KvEvent`]s for one worker.

use std::collections::{HashMap, HashSet};

use dynamo_core::{
    BlockHasher, BlockSize, HashedBlock, KvEvent, KvEventData, SequenceHash, Token, WorkerId,
};

use super::EventsError;
use super::blocks::Blocks;
use super::levels::{Held, Level, Levels};
use super::wire::{EngineHash, Removed, Stored, StoredBlock, Updated, WireEvent};

/// Engine blocks the decoder remembers by default (their hashes map to ours).
pub(super) const MAX_BLOCKS: usize = 1 << 22;
/// Attention data-parallel ranks followed for event-id gaps; events of further ranks are
/// malformed (a server has a handful).
const MAX_RANKS: usize = 1024;

/// What a decoder has seen and done, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCounts {
    /// Events read (each element of an answer that parsed as an event).
    pub events: u64,
    /// Router events produced.
    pub applied: u64,
    /// Jumps in the event ids ([`EventsError::Lost`]).
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
    /// Answers or events that did not parse ([`EventsError::Malformed`]).
    pub malformed: u64,
    /// `stored` events of another block size ([`EventsError::BlockSizeMismatch`]).
    pub block_size_mismatches: u64,
}

/// Turns `trtllm-serve`'s `/kv_cache_events` answers into [`KvEvent`]s for one worker.
///
/// Our block hashes are recomputed from each stored block's token ids with the router's
/// [`BlockHasher`], chained from the parent block, exactly as the vLLM and SGLang events'
/// decoder does (`dynamo_transport::engine_events`); the engine's own hashes are kept only
/// to resolve parents, removals and updates. The events produced are numbered from 0 without
/// gaps, so the index sees one unbroken history; gaps in the server's own ids are reported as
/// [`EventsError::Lost`] and counted.
///
/// Each block's cache level is its tier: level 0 (GPU memory) the device, 1 (host memory,
/// where the server offloads blocks) [`StorageTier::Host`](dynamo_core::StorageTier::Host),
/// 2 (the newer KV cache manager's disk tier) the disk; blocks at other levels are not indexed
/// ([`EventCounts::unknown_levels`]). An `updated` event that changes a known block's level
/// moves it: a `Stored` of the block in the new tier, after the parent it was stored with,
/// then a `Removed` in the old tier. A `removed` block is removed from the tier it is in, and
/// so is every known block stored after it, each from its own tier: TensorRT-LLM's KV cache
/// manager frees a reclaimed block's descendants with it, and since its lookup-tree rewrite
/// (2026) names only the reclaimed block ([`EventCounts::descendants_removed`]); a block named
/// after its ancestor in the same event, as older versions name them, is removed once.
///
/// ```
/// use dynamo_core::{BlockSize, KvEventData, WorkerId};
/// use dynamo_trtllm::TrtllmEventDecoder;
///
/// let mut decoder = TrtllmEventDecoder::new(WorkerId::new(3), BlockSize::new(2)?);
/// let body = br#"[{"event_id": 1, "window_size": 64, "data": {"type": "stored",
///     "parent_hash": null, "blocks": [{"type": "stored_block", "block_hash": 77,
///     "tokens": [{"type": "unique_token", "token_id": 5, "token_extra_id": 0},
///                {"type": "unique_token", "token_id": 6, "token_extra_id": 0}],
///     "cache_level": 0, "priority": 35}]}}]"#;
/// let events: Vec<_> = decoder.decode(body).into_iter().collect::<Result<_, _>>()?;
/// assert!(matches!(&events[0].data, KvEventData::Stored { blocks, .. } if blocks.len() == 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TrtllmEventDecoder {
    worker: WorkerId,
    hasher: BlockHasher,
    /// What we know of the blocks the server holds, by engine block hash, with their links.
    blocks: Blocks,
    /// The levels besides the device's that may hold blocks in the index since the last
    /// clear (each needs its own `Cleared`).
    used: Levels,
    max_blocks: usize,
    next_event_id: u64,
    /// The last event id read, per attention data-parallel rank.
    last_ids: HashMap<u64, u64>,
    /// The attention window and layer group whose events are followed (the first seen).
    group: Option<(Option<u64>, Option<u64>)>,
    counts: EventCounts,
}

impl TrtllmEventDecoder {
    /// A decoder for `worker`'s server, whose `tokens_per_block` must be `block_size`.
    pub fn new(worker: WorkerId, block_size: BlockSize) -> Self {
        TrtllmEventDecoder {
            worker,
            hasher: BlockHasher::new(block_size),
            blocks: Blocks::default(),
            used: Levels::default(),
            max_blocks: MAX_BLOCKS,
            next_event_id: 0,
            last_ids: HashMap::new(),
            group: None,
            counts: EventCounts::default(),
        }
    }

    /// Remember at most `max_blocks` engine blocks (4,194,304 by default, about 150 bytes each
    /// with the links to their parent and children); `stored` events past that are skipped
    /// and counted, so a server cannot grow the map without bound.
    pub fn max_blocks(mut self, max_blocks: usize) -> Self {
        self.max_blocks = max_blocks;
        self
    }

    /// What the decoder has seen and done so far.
    pub fn counts(&self) -> EventCounts {
        self.counts
    }

    /// Decode one answer of `POST /kv_cache_events`: its events for the router, in order,
    /// with the problems met on the way where they happened. A body that is not a JSON list
    /// gives one [`EventsError::Malformed`]; a bad event gives its error and is skipped, and
    /// the events after it decode as usual. Never panics on input.
    pub fn decode(&mut self, body: &[u8]) -> Vec<Result<KvEvent, EventsError>> {
        let list: Vec<serde_json::Value> = match serde_json::from_slice(body) {
            Ok(list) => list,
            Err(error) => {
                self.counts.malformed += 1;
                return vec![Err(EventsError::malformed(
                    "the answer is not a JSON list of events",
                    Some(error),
                ))];
            }
        };
        let mut out = Vec::with_capacity(list.len());
        for value in list {
            let event: WireEvent = match serde_json::from_value(value) {
                Ok(event) => event,
                Err(error) => {
                    self.counts.malformed += 1;
                    out.push(Err(EventsError::malformed(
                        "an event without an event_id or data",
                        Some(error),
                    )));
                    continue;
                }
            };
            self.counts.events += 1;
            if let Err(error) = self.follow_ids(&event, &mut out) {
                out.push(Err(error));
                continue;
            }
            let group = (event.window_size, event.layer_group_id);
            match self.group {
                Some(followed) if followed != group => {
                    self.counts.other_groups += 1;
                    continue;
                }
                Some(_) => {}
                None => self.group = Some(group),
            }
            if let Err(error) = self.data(event.data, &mut out) {
                out.push(Err(error));
            }
        }
        out
    }

    /// Check `event`'s id against the last one of its rank: a jump is reported in `out`, a
    /// step back (a restarted server) clears what was known.
    fn follow_ids(
        &mut self,
        event: &WireEvent,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) -> Result<(), EventsError> {
        let rank = event.attention_dp_rank.unwrap_or(0);
        let received = event.event_id;
        match self.last_ids.get(&rank).copied() {
            Some(last) if received <= last => {
                tracing::info!(
                    worker = %self.worker,
                    last,
                    received,
                    "the TensorRT-LLM server's event ids went back: it restarted"
                );
                self.counts.restarts += 1;
                self.last_ids.clear();
                self.clear(out);
            }
            Some(last) if received > last.saturating_add(1) => {
                self.counts.gaps += 1;
                self.counts.lost += received - last - 1;
                out.push(Err(EventsError::Lost {
                    expected: last + 1,
                    received,
                }));
            }
            Some(_) => {}
            None if self.last_ids.len() >= MAX_RANKS => {
                self.counts.malformed += 1;
                return Err(EventsError::malformed(
                    format!("more than {MAX_RANKS} attention data-parallel ranks"),
                    None,
                ));
            }
            None => {}
        }
        self.last_ids.insert(rank, received);
        Ok(())
    }

    /// The router's changes for one event's `data`, pushed on `out`.
    fn data(
        &mut self,
        data: serde_json::Value,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) -> Result<(), EventsError> {
        let kind = data.get("type").and_then(serde_json::Value::as_str);
        match kind {
            // A new cache is an empty one.
            Some("created") => self.clear(out),
            Some("stored") => {
                let stored: Stored = self.parse(data, "a stored event")?;
                self.stored(stored, out)?;
            }
            Some("removed") => {
                let removed: Removed = self.parse(data, "a removed event")?;
                self.removed(&removed, out);
            }
            Some("updated") => {
                let updated: Updated = self.parse(data, "an updated event")?;
                self.updated(&updated, out);
            }
            other => {
                tracing::debug!(worker = %self.worker, kind = ?other, "unknown KV event type skipped");
                self.counts.unknown_types += 1;
            }
        }
        Ok(())
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &mut self,
        data: serde_json::Value,
        what: &str,
    ) -> Result<T, EventsError> {
        serde_json::from_value(data).map_err(|error| {
            self.counts.malformed += 1;
            EventsError::malformed(format!("{what} of the wrong shape"), Some(error))
        })
    }

    /// A chain of stored blocks, hashed our way from their token ids: one `Stored` per run of
    /// blocks at the same level; nothing is remembered unless the whole event is good.
    fn stored(
        &mut self,
        stored: Stored,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) -> Result<(), EventsError> {
        let parent = match &stored.parent_hash {
            None => None,
            Some(engine) => match self.blocks.get(engine) {
                Some(parent) => Some(parent.block.sequence),
                None => {
                    self.counts.unknown_parent += 1;
                    return Ok(());
                }
            },
        };
        let block_size = self.hasher.block_size();
        let size = block_size.as_usize();
        let last = stored.blocks.len().saturating_sub(1);
        let mut chain = parent;
        let mut remembered = Vec::with_capacity(stored.blocks.len());
        for (at, block) in stored.blocks.iter().enumerate() {
            if block.tokens.len() != size {
                if block.tokens.len() < size && at == last {
                    self.counts.partial_blocks += 1;
                    break;
                }
                self.counts.block_size_mismatches += 1;
                return Err(EventsError::BlockSizeMismatch {
                    engine: block.tokens.len(),
                    ours: block_size.get(),
                });
            }
            if block
                .tokens
                .iter()
                .any(|token| token.token_extra_id.is_some_and(|extra| extra != 0))
            {
                // Its children would chain from a block the index does not hold.
                self.counts.multimodal_blocks += 1;
                break;
            }
            let Some(level) = Level::new(block.cache_level) else {
                // As for a multimodal block: the chain stops here.
                self.counts.unknown_levels += 1;
                break;
            };
            let hasher = self.hasher_for(block);
            let local = hasher.local_hash(&self.token_ids(block)?);
            let sequence = SequenceHash::chain(chain, local);
            let held = Held {
                block: HashedBlock { local, sequence },
                parent: chain,
                level,
            };
            remembered.push((block.block_hash.clone(), held));
            chain = Some(sequence);
        }
        if remembered.is_empty() {
            return Ok(());
        }
        if self.blocks.len().saturating_add(remembered.len()) > self.max_blocks {
            self.counts.over_capacity += 1;
            return Ok(());
        }
        for run in remembered.chunk_by(|(_, a), (_, b)| a.level == b.level) {
            let level = run[0].1.level;
            self.used.insert(level);
            let data = KvEventData::Stored {
                parent: run[0].1.parent,
                block_size,
                blocks: run.iter().map(|(_, held)| held.block).collect(),
            };
            out.push(Ok(self.numbered(level, data)));
        }
        // A block stored again at another level than it was known at has left that one (a
        // block is at one level at a time).
        let mut left = Vec::new();
        let mut after = stored.parent_hash;
        for (engine, held) in remembered {
            if let Some(before) = self.blocks.insert(engine.clone(), after.as_ref(), held)
                && before.level != held.level
                && before.block.sequence == held.block.sequence
            {
                left.push((before.level, held.block.sequence));
            }
            after = Some(engine);
        }
        self.removed_from(left, out);
        Ok(())
    }

    /// A LoRA adapter is known here only by its id: its decimal form names it, as in the vLLM
    /// events' decoder.
    fn hasher_for(&self, block: &StoredBlock) -> BlockHasher {
        match block.lora_id {
            Some(lora) => self.hasher.with_lora(&lora.to_string()),
            None => self.hasher,
        }
    }

    fn token_ids(&mut self, block: &StoredBlock) -> Result<Vec<Token>, EventsError> {
        block
            .tokens
            .iter()
            .map(|token| Token::try_from(token.token_id).ok())
            .collect::<Option<Vec<Token>>>()
            .ok_or_else(|| {
                self.counts.malformed += 1;
                EventsError::malformed("a token id is not a u32", None)
            })
    }

    /// Removed blocks, each with its known descendants (which the server may have dropped
    /// without naming them), each from the tier it is in.
    fn removed(&mut self, removed: &Removed, out: &mut Vec<Result<KvEvent, EventsError>>) {
        let named = &removed.block_hashes;
        let known: HashSet<&EngineHash> = named
            .iter()
            .filter(|engine| self.blocks.get(engine).is_some())
            .collect();
        self.counts.unknown_removed += named
            .iter()
            .filter(|engine| !known.contains(engine))
            .count() as u64;
        // A block named after one of its ancestors (or twice) went with the first.
        let mut gone = Vec::new();
        for engine in named {
            self.blocks.remove_tree(engine, &mut gone);
        }
        // Every known block named is gone, and so are the descendants not named.
        self.counts.descendants_removed += gone.len().saturating_sub(known.len()) as u64;
        self.removed_from(to_levels(gone), out);
    }

    /// One `Removed` per level of `blocks`, fastest level first.
    fn removed_from(
        &mut self,
        blocks: Vec<(Level, SequenceHash)>,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) {
        for level in Level::all() {
            let at_level: Vec<SequenceHash> = blocks
                .iter()
                .filter(|(at, _)| *at == level)
                .map(|(_, sequence)| *sequence)
                .collect();
            if !at_level.is_empty() {
                let data = KvEventData::Removed { blocks: at_level };
                out.push(Ok(self.numbered(level, data)));
            }
        }
    }

    /// A block's priority or cache level changed: a new level moves it between tiers.
    fn updated(&mut self, updated: &Updated, out: &mut Vec<Result<KvEvent, EventsError>>) {
        let Some(diff) = updated
            .cache_level
            .filter(|diff| diff.old_value != diff.new_value)
        else {
            self.counts.updated += 1;
            return;
        };
        let Some(held) = self.blocks.get(&updated.block_hash) else {
            self.counts.unknown_updated += 1;
            return;
        };
        let Some(level) = Level::new(diff.new_value) else {
            // Forgotten, and its descendants with it: the router cannot reach them without
            // it, and a later removal of it would not be recognised to take them.
            self.counts.unknown_levels += 1;
            let mut gone = Vec::new();
            self.blocks.remove_tree(&updated.block_hash, &mut gone);
            self.counts.descendants_removed += gone.len().saturating_sub(1) as u64;
            self.removed_from(to_levels(gone), out);
            return;
        };
        // The level the block is known at, whatever the event says it came from.
        if level == held.level {
            self.counts.updated += 1;
            return;
        }
        self.counts.moved += 1;
        self.used.insert(level);
        // Stored first: the block stays held while it moves, for the index and its children.
        let stored = KvEventData::Stored {
            parent: held.parent,
            block_size: self.hasher.block_size(),
            blocks: vec![held.block],
        };
        out.push(Ok(self.numbered(level, stored)));
        self.removed_from(vec![(held.level, held.block.sequence)], out);
        self.blocks.set_level(&updated.block_hash, level);
    }

    /// Forget every block: a `Cleared` for the device's tier, and for each other tier that
    /// may hold blocks of this server.
    fn clear(&mut self, out: &mut Vec<Result<KvEvent, EventsError>>) {
        self.blocks.clear();
        let used = std::mem::take(&mut self.used);
        for level in Level::all() {
            if level == Level::DEVICE || used.contains(level) {
                out.push(Ok(self.numbered(level, KvEventData::Cleared)));
            }
        }
    }

    fn numbered(&mut self, level: Level, data: KvEventData) -> KvEvent {
        let event = KvEvent {
            worker: self.worker,
            event_id: self.next_event_id,
            tier: level.tier(),
            data,
        };
        self.next_event_id += 1;
        self.counts.applied += 1;
        event
    }
}

/// The level and sequence hash of each of `blocks`, for [`TrtllmEventDecoder::removed_from`].
fn to_levels(blocks: Vec<(EngineHash, Held)>) -> Vec<(Level, SequenceHash)> {
    blocks
        .into_iter()
        .map(|(_, held)| (held.level, held.block.sequence))
        .collect()
}
