//! TensorRT-LLM's KV events, turned into the router's [`KvEvent`]s for one worker.

use std::collections::HashMap;

use dynamo_core::{
    BlockHasher, BlockSize, HashedBlock, KvEvent, KvEventData, SequenceHash, StorageTier, Token,
    WorkerId,
};

use super::EventsError;
use super::wire::{EngineHash, Removed, Stored, StoredBlock, WireEvent};

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
    /// `updated` events (a block's priority or cache level changed), skipped.
    pub updated: u64,
    /// Events of another attention window or layer group than the first one seen, skipped.
    pub other_groups: u64,
    /// `stored` events whose parent block was never seen stored (stored before the poller
    /// started, or in lost events), skipped.
    pub unknown_parent: u64,
    /// Removed block hashes never seen stored, ignored.
    pub unknown_removed: u64,
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
/// to resolve parents and removals. The events produced are numbered from 0 without gaps, so
/// the index sees one unbroken history; gaps in the server's own ids are reported as
/// [`EventsError::Lost`] and counted.
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
    /// Engine block hash → our sequence hash, for the blocks the server holds.
    blocks: HashMap<EngineHash, SequenceHash>,
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
            blocks: HashMap::new(),
            max_blocks: MAX_BLOCKS,
            next_event_id: 0,
            last_ids: HashMap::new(),
            group: None,
            counts: EventCounts::default(),
        }
    }

    /// Remember at most `max_blocks` engine blocks (4,194,304 by default); `stored` events
    /// past that are skipped and counted, so a server cannot grow the map without bound.
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
            match self.data(event.data) {
                Ok(Some(data)) => out.push(Ok(self.numbered(data))),
                Ok(None) => {}
                Err(error) => out.push(Err(error)),
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
                self.forget();
                out.push(Ok(self.numbered(KvEventData::Cleared)));
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

    /// The router's change for one event's `data`, if it makes one.
    fn data(&mut self, data: serde_json::Value) -> Result<Option<KvEventData>, EventsError> {
        let kind = data.get("type").and_then(serde_json::Value::as_str);
        match kind {
            // A new cache is an empty one.
            Some("created") => {
                self.forget();
                Ok(Some(KvEventData::Cleared))
            }
            Some("stored") => {
                let stored: Stored = self.parse(data, "a stored event")?;
                self.stored(stored)
            }
            Some("removed") => {
                let removed: Removed = self.parse(data, "a removed event")?;
                Ok(self.removed(&removed))
            }
            Some("updated") => {
                self.counts.updated += 1;
                Ok(None)
            }
            other => {
                tracing::debug!(worker = %self.worker, kind = ?other, "unknown KV event type skipped");
                self.counts.unknown_types += 1;
                Ok(None)
            }
        }
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

    /// A chain of stored blocks, hashed our way from their token ids; nothing is remembered
    /// unless the whole event is good.
    fn stored(&mut self, stored: Stored) -> Result<Option<KvEventData>, EventsError> {
        let parent = match &stored.parent_hash {
            None => None,
            Some(engine) => match self.blocks.get(engine) {
                Some(&parent) => Some(parent),
                None => {
                    self.counts.unknown_parent += 1;
                    return Ok(None);
                }
            },
        };
        let block_size = self.hasher.block_size();
        let size = block_size.as_usize();
        let last = stored.blocks.len().saturating_sub(1);
        let mut chain = parent;
        let mut blocks = Vec::with_capacity(stored.blocks.len());
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
            let hasher = self.hasher_for(block);
            let local = hasher.local_hash(&self.token_ids(block)?);
            let sequence = SequenceHash::chain(chain, local);
            blocks.push(HashedBlock { local, sequence });
            remembered.push((block.block_hash.clone(), sequence));
            chain = Some(sequence);
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        if self.blocks.len().saturating_add(remembered.len()) > self.max_blocks {
            self.counts.over_capacity += 1;
            return Ok(None);
        }
        self.blocks.extend(remembered);
        Ok(Some(KvEventData::Stored {
            parent,
            block_size,
            blocks,
        }))
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

    fn removed(&mut self, removed: &Removed) -> Option<KvEventData> {
        let blocks: Vec<SequenceHash> = removed
            .block_hashes
            .iter()
            .filter_map(|engine| self.blocks.remove(engine))
            .collect();
        self.counts.unknown_removed += (removed.block_hashes.len() - blocks.len()) as u64;
        (!blocks.is_empty()).then_some(KvEventData::Removed { blocks })
    }

    fn forget(&mut self) {
        self.blocks.clear();
    }

    fn numbered(&mut self, data: KvEventData) -> KvEvent {
        let event = KvEvent {
            worker: self.worker,
            event_id: self.next_event_id,
            tier: StorageTier::Device,
            data,
        };
        self.next_event_id += 1;
        self.counts.applied += 1;
        event
    }
}
