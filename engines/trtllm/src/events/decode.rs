//! TensorRT-LLM's KV events, turned into the router's [`KvEvent`]s for one worker.

use std::collections::HashMap;

use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, WorkerId};

use super::EventsError;
use super::blocks::Blocks;
use super::counts::EventCounts;
use super::levels::{Level, Levels};
use super::wire::{Removed, Stored, Updated, WireEvent};

/// Engine blocks the decoder remembers by default (their hashes map to ours).
pub(super) const MAX_BLOCKS: usize = 1 << 22;
/// Attention data-parallel ranks followed for event-id gaps; events of further ranks are
/// malformed (a server has a handful).
const MAX_RANKS: usize = 1024;

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
    pub(super) worker: WorkerId,
    pub(super) hasher: BlockHasher,
    /// What we know of the blocks the server holds, by engine block hash, with their links.
    pub(super) blocks: Blocks,
    /// The levels besides the device's that may hold blocks in the index since the last
    /// clear (each needs its own `Cleared`).
    pub(super) used: Levels,
    pub(super) max_blocks: usize,
    next_event_id: u64,
    /// The last event id read, per attention data-parallel rank.
    last_ids: HashMap<u64, u64>,
    /// The attention window and layer group whose events are followed (the first seen).
    group: Option<(Option<u64>, Option<u64>)>,
    pub(super) counts: EventCounts,
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

    pub(super) fn numbered(&mut self, level: Level, data: KvEventData) -> KvEvent {
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
