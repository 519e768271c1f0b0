//! KV events as vLLM and SGLang publish them, turned into [`KvEvent`]s.
//!
//! The engines publish on a ZMQ PUB socket. Each message has three frames: a topic (UTF-8), a
//! sequence number (8 bytes, big-endian, signed), and a msgpack payload, the batch
//! `[timestamp, events, data_parallel_rank]` (or a map with `events`, in vLLM's newer source).
//! An event is a tagged array, or a map with its tag under `type` and its fields by name
//! (vLLM's newer source, SGLang from 0.5.20):
//!
//! - `["BlockStored", block_hashes, parent_block_hash | nil, token_ids, block_size,
//!   lora_id | nil, medium | nil, lora_name | nil, extra_keys | nil, group_idx | nil,
//!   kv_cache_spec_kind | nil, …]` (vLLM), or with `{"cache_salt": salt}` after `medium`
//!   (salted blocks of SGLang 0.5.18 and 0.5.19); as a map, the same names, and SGLang's
//!   `cache_salt` and `lora_name`
//! - `["BlockRemoved", block_hashes, medium | nil, group_idx | nil, …]`
//! - `["AllBlocksCleared", …]`
//!
//! `token_ids` are plain ids, or, from SGLang under EAGLE speculative decoding, the pairs of
//! each position's token and the next one, read as their first elements.
//!
//! Fields past the ones named are ignored (newer engines add some), and so are unknown keys of
//! a map. Hashes come as signed or unsigned 64-bit integers, or as bytes. They are the engine's
//! own and opaque: the decoder recomputes our block hashes from the token ids (so a different
//! hash seed in the engine cannot silently give 0% hits) and keeps the engine-to-ours map, with
//! the tiers (`medium`) that hold each block, to resolve `BlockRemoved`: a removal takes the
//! block from its medium's tier only, and `AllBlocksCleared` (vLLM's reset of its GPU block
//! pool) clears the device tier, as the router does. The media known, in any case: `GPU` (or
//! none) the device tier; `CPU` (vLLM) and `CPU_PINNED` (SGLang) host memory; `DISK`, and
//! `STORAGE` (vLLM's file-backed offloading tier), the disk; `EXTERNAL` (SGLang's shared or
//! remote pool) the remote tier.
//!
//! What the decoder cannot index is skipped and counted in [`Decoded`], never guessed, and the
//! rest of the message applies:
//!
//! - a `BlockStored` without token ids (vLLM's offloading connector names an offloaded chunk by
//!   the hash of its last block alone, `block_size` 0): its blocks the map knows are stored in
//!   the event's tier too; the others are [`Decoded::tokenless`]
//! - a `BlockStored` after a parent the decoder does not know (stored before it subscribed, or
//!   skipped): [`Decoded::unknown_parent`]
//! - a `BlockStored` whose token ids do not fill its blocks, one block size each (a vLLM group
//!   that lists only the blocks it keeps, SGLang's short page): [`Decoded::misaligned`]
//! - a `BlockStored` or `BlockRemoved` of a `medium` the decoder does not know (the tiers are
//!   listed below): [`Decoded::unknown_medium`]
//!
//! A `BlockStored` hashed with tokens past its blocks (vLLM's `lookahead_token_ids`, when the
//! server hashes with lookahead for EAGLE-style speculative decoding) is indexed on its blocks'
//! own tokens, and the first is logged. Such a server reuses a block only for a request whose
//! next tokens match the ones it was hashed with, so for a request that diverges within those
//! tokens after a block boundary, or whose prompt ends there, the router counts one block more
//! than the server reuses: at most one block at the end of a match, never a gap before it.
//!
//! A message of the wrong shape, or with a block of another size, is refused whole.
//!
//! A stored block is hashed as the router hashes a request's prompt
//! ([`GenerateRequest::block_hasher`](dynamo_core::GenerateRequest::block_hasher)): with its
//! LoRA adapter (`lora_name`, or else the decimal form of `lora_id`) and its cache salt. SGLang
//! names the salt on every salted event; vLLM only among the extra keys of a sequence's first
//! block (the string left once the LoRA name is set aside), so a block stored after a known
//! parent takes the parent's salt.
//!
//! Of a vLLM hybrid model's KV cache groups (`group_idx`), one is followed: see
//! [`EngineEventDecoder::decode`].

mod fields;
mod groups;
mod known;
mod stored;

#[cfg(feature = "zmq")]
mod zmq;

use std::mem;

use dynamo_core::{
    BlockHasher, BlockSize, KvEvent, KvEventData, SequenceHash, StorageTier, WorkerId,
};
use rmpv::Value;

use crate::Error;
use fields::{Event, engine_hashes, tier};
use known::Known;

#[cfg(feature = "zmq")]
pub use zmq::{EngineEventCounts, EngineEventSource, EngineEventStream};

/// How deep a payload's arrays and maps may nest: a batch nests four levels (batch, events,
/// event, hashes); rmpv's default of 1,024 recursive calls overflows a 2 MiB thread stack in a
/// debug build.
const MAX_NESTING: usize = 16;

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message's events, ready for the index (each with the next `event_id`).
    pub events: Vec<KvEvent>,
    /// Sequence numbers skipped before this message (`Some((expected, received))`): messages
    /// were lost, so the index is missing events; ask the engine's replay socket from
    /// `expected`. A `received` below `expected` is an engine that restarted, counting from 0
    /// again: call [`EngineEventDecoder::engine_restarted`] before decoding its messages (as
    /// `EngineEventSource` does, feature `zmq`).
    pub gap: Option<(i64, i64)>,
    /// Removed blocks the decoder never saw stored (ignored).
    pub unknown_removed: usize,
    /// Stored and removed events of KV cache groups the decoder does not follow (skipped): a
    /// vLLM hybrid model's sliding-window, Mamba or other groups (see
    /// [`EngineEventDecoder::decode`]).
    pub other_groups: usize,
    /// Blocks of stored events without token ids (vLLM's offloading connector) that the
    /// decoder never saw stored with them, so cannot name (skipped; see the
    /// [module docs](crate::engine_events)).
    pub tokenless: usize,
    /// Stored blocks whose parent the decoder does not know (stored before it subscribed, in
    /// lost messages, or in an event it skipped), so cannot hash (skipped).
    pub unknown_parent: usize,
    /// Blocks of stored events whose token ids do not fill them, one block size each (a
    /// vLLM group that lists only the blocks it keeps, SGLang's short page), so cannot be
    /// told apart (skipped).
    pub misaligned: usize,
    /// Blocks of stored and removed events of a `medium` the decoder does not know (see the
    /// [module docs](crate::engine_events) for those it knows), skipped: their tier is
    /// unknown. The first such medium is logged once per decoder.
    pub unknown_medium: usize,
}

/// Turns one engine's messages into [`KvEvent`]s for one worker.
#[derive(Debug)]
pub struct EngineEventDecoder {
    worker: WorkerId,
    hasher: BlockHasher,
    /// Engine block hash → our hashes, parent and tiers, for the blocks the engine holds; and
    /// → our hasher with the block's cache salt (no LoRA adapter), for the salted blocks among
    /// them: a vLLM block stored after one of them takes its salt.
    known: known::Maps,
    /// The KV cache group (vLLM's `group_idx`) whose events are followed, once one is chosen.
    followed: Option<i64>,
    next_event_id: u64,
    last_sequence: Option<i64>,
    /// Whether an unknown medium was logged.
    logged_medium: bool,
    /// Whether stores hashed with lookahead were logged.
    logged_lookahead: bool,
}

impl EngineEventDecoder {
    /// A decoder for `worker`'s engine, whose blocks must be `block_size` tokens.
    pub fn new(worker: WorkerId, block_size: BlockSize) -> Self {
        EngineEventDecoder {
            worker,
            hasher: BlockHasher::new(block_size),
            known: known::Maps::default(),
            followed: None,
            next_event_id: 0,
            last_sequence: None,
            logged_medium: false,
            logged_lookahead: false,
        }
    }

    /// The sequence number the next message should carry, once one has been decoded; `None`
    /// before that, and after a message numbered `i64::MAX`, which no number follows.
    pub fn expected_sequence(&self) -> Option<i64> {
        self.last_sequence.and_then(|last| last.checked_add(1))
    }

    /// Count message `sequence` as consumed without decoding it (a malformed message that a
    /// replay would not mend).
    pub fn skip(&mut self, sequence: i64) {
        self.last_sequence = Some(sequence);
    }

    /// Forget the engine's cache: the engine restarted (its publisher went away, or its
    /// sequence numbers began again), and the blocks it held went with the old process.
    /// Returns the events that tell the index, a [`KvEventData::Cleared`] for every tier; the
    /// next message starts the sequence afresh, with no gap to replay.
    pub fn engine_restarted(&mut self) -> Vec<KvEvent> {
        self.known = known::Maps::default();
        self.last_sequence = None;
        StorageTier::ALL
            .into_iter()
            .map(|tier| self.event(tier, KvEventData::Cleared))
            .collect()
    }

    /// The next event of the worker, numbered.
    fn event(&mut self, tier: StorageTier, data: KvEventData) -> KvEvent {
        let event = KvEvent {
            worker: self.worker,
            event_id: self.next_event_id,
            tier,
            data,
        };
        self.next_event_id += 1;
        event
    }

    /// Decode one ZMQ message (topic, sequence number, payload).
    ///
    /// # Errors
    ///
    /// [`Error::EngineEventFrames`], [`Error::EngineEventSequence`] and
    /// [`Error::MalformedEngineEvent`] for a message of the wrong shape, and
    /// [`Error::BlockSizeMismatch`] for one of another block size; nothing of it is applied,
    /// and the next message decodes as usual.
    ///
    /// # KV cache groups
    ///
    /// A vLLM model with several KV cache groups (attention with sliding-window or Mamba layers)
    /// stores and removes blocks in each group, at the group's block size, naming it in
    /// `group_idx`; the same engine hash can name a block in two groups. The decoder follows one
    /// group, chosen once: the first, in the order of the stored events, of a full-attention
    /// kind (`kv_cache_spec_kind` `full_attention`, `mla_attention` or `sink_full_attention`;
    /// or `unknown`, or none named) at the router's block size, whose blocks hold the whole
    /// prefix as the router hashes it. Every other group's events are skipped and counted in
    /// [`Decoded::other_groups`], and removals resolve in the followed group only. A message
    /// with a full-attention group at another block size, and none at ours followed or in it,
    /// is [`Error::BlockSizeMismatch`]. Events that name no group are one group's, decoded as
    /// they come.
    pub fn decode(&mut self, frames: &[&[u8]]) -> Result<Decoded, Error> {
        let [_topic, sequence, payload] = frames else {
            return Err(Error::EngineEventFrames {
                count: frames.len(),
            });
        };
        let sequence: [u8; 8] = (*sequence)
            .try_into()
            .map_err(|_| Error::EngineEventSequence {
                length: sequence.len(),
            })?;
        let sequence = i64::from_be_bytes(sequence);
        let batch = rmpv::decode::read_value_with_max_depth(&mut &payload[..], MAX_NESTING)
            .map_err(|error| Error::malformed_engine_event(error.to_string()))?;
        let events = fields::batch_events(&batch)
            .ok_or_else(|| malformed("the batch is not [timestamp, events, rank]"))?;

        // Change the block maps in place with an undo journal, so that a bad event leaves no
        // trace at the cost of the message's own changes (not a copy of every known block).
        let mut known = Known::new(mem::take(&mut self.known));
        let changes = self.changes(events, &mut known);
        self.known = match &changes {
            Ok(_) => known.keep(),
            Err(_) => known.roll_back(),
        };
        let Changes {
            changes,
            unknown_removed,
            other_groups,
            tokenless,
            unknown_parent,
            misaligned,
            lookahead,
            unknown_medium,
            medium,
            followed,
        } = changes?;
        if let (false, Some(medium)) = (self.logged_medium, medium) {
            tracing::warn!(
                worker = %self.worker,
                %medium,
                "the engine's KV events name a medium the decoder does not know: their blocks \
                 are skipped (counted as unknown_medium)"
            );
            self.logged_medium = true;
        }
        if lookahead > 0 && !self.logged_lookahead {
            tracing::warn!(
                worker = %self.worker,
                "the engine hashes its blocks with the tokens after them (vLLM's lookahead \
                 hashing): they are indexed on their own tokens, so the router may count one \
                 block more at the end of a match than the server reuses"
            );
            self.logged_lookahead = true;
        }
        if let (None, Some(group)) = (self.followed, followed) {
            tracing::info!(
                worker = %self.worker,
                group,
                "following the engine's KV cache group {group} (the first of full attention, or \
                 of no named kind, at the router's block size); other groups' events are skipped"
            );
        }
        self.followed = followed;
        let gap = match self.expected_sequence() {
            Some(expected) if sequence != expected => Some((expected, sequence)),
            _ => None,
        };
        self.last_sequence = Some(sequence);
        let events = changes
            .into_iter()
            .map(|(tier, data)| self.event(tier, data))
            .collect();
        Ok(Decoded {
            events,
            gap,
            unknown_removed,
            other_groups,
            tokenless,
            unknown_parent,
            misaligned,
            unknown_medium,
        })
    }

    /// The router's changes for a message's `events`; `known` changed as they say.
    fn changes(&self, events: &[Value], known: &mut Known) -> Result<Changes, Error> {
        let mut out = Changes {
            changes: Vec::with_capacity(events.len()),
            followed: self.choose_group(events)?,
            ..Changes::default()
        };
        for event in events {
            let event = Event::new(event)
                .ok_or_else(|| malformed("an event is neither an array nor a map"))?;
            let group = match event.kind() {
                Some("BlockStored") => event.group(fields::stored::GROUP_IDX),
                Some("BlockRemoved") => event.group(fields::removed::GROUP_IDX),
                _ => None,
            };
            if group.is_some() && group != out.followed {
                out.other_groups += 1;
                continue;
            }
            match event.kind() {
                Some("BlockStored") => self.stored(event, known, &mut out)?,
                Some("BlockRemoved") => {
                    let hashes =
                        engine_hashes(event.field("block_hashes", fields::removed::BLOCK_HASHES))?;
                    let medium = event.field("medium", fields::removed::MEDIUM);
                    let Some(tier) = tier(medium) else {
                        out.skip_medium(hashes.len(), medium);
                        continue;
                    };
                    let removed: Vec<SequenceHash> = hashes
                        .iter()
                        .filter_map(|&hash| known.remove(hash, tier))
                        .collect();
                    out.unknown_removed += hashes.len() - removed.len();
                    if !removed.is_empty() {
                        out.changes
                            .push((tier, KvEventData::Removed { blocks: removed }));
                    }
                }
                Some("AllBlocksCleared") => {
                    // The engine's GPU block pool was reset (vLLM's `reset_prefix_cache`): the
                    // device tier, as the router clears it; offloaded copies stay.
                    known.clear(StorageTier::Device);
                    out.changes
                        .push((StorageTier::Device, KvEventData::Cleared));
                }
                other => return Err(malformed(&format!("unknown event kind {other:?}"))),
            }
        }
        Ok(out)
    }
}

/// What a message changes, and what of it the decoder skipped (the counts of [`Decoded`]).
#[derive(Default)]
struct Changes {
    /// The router's changes, in order.
    changes: Vec<(StorageTier, KvEventData)>,
    unknown_removed: usize,
    other_groups: usize,
    tokenless: usize,
    unknown_parent: usize,
    misaligned: usize,
    /// Blocks stored hashed with lookahead, indexed (only logged).
    lookahead: usize,
    unknown_medium: usize,
    /// The first medium the decoder does not know, as the message names it.
    medium: Option<String>,
    /// The group followed after this message.
    followed: Option<i64>,
}

impl Changes {
    /// Count `blocks` skipped for their `medium`, which names no known tier.
    fn skip_medium(&mut self, blocks: usize, medium: Option<&Value>) {
        self.unknown_medium += blocks;
        if self.medium.is_none()
            && let Some(medium) = medium
        {
            self.medium = Some(match medium.as_str() {
                Some(name) => name.to_owned(),
                None => medium.to_string(),
            });
        }
    }
}

fn malformed(what: &str) -> Error {
    Error::malformed_engine_event(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[timestamp, [], rank]`: a batch without events.
    const EMPTY_BATCH: &[u8] = &[0x93, 0x00, 0x90, 0x00];

    #[test]
    fn the_last_sequence_number_is_followed_by_no_expectation() {
        // Found by the `engine_events` fuzz target: `last + 1` overflowed (a panic in debug
        // builds) once a message carried sequence number i64::MAX.
        let block_size = BlockSize::new(4).expect("a block size");
        let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size);
        let last = i64::MAX.to_be_bytes();
        let decoded = decoder
            .decode(&[b"kv", &last, EMPTY_BATCH])
            .expect("decoded");
        assert_eq!(decoded.gap, None);
        assert_eq!(decoder.expected_sequence(), None);
        let next = decoder
            .decode(&[b"kv", &0i64.to_be_bytes(), EMPTY_BATCH])
            .expect("decoded");
        assert_eq!(next.gap, None);
        assert_eq!(decoder.expected_sequence(), Some(1));
    }

    #[test]
    fn deeply_nested_payloads_are_malformed_not_a_stack_overflow() {
        // Found by replaying the `engine_events` corpus in a debug build: a payload of 1,000
        // nested arrays overflowed the test thread's stack inside rmpv.
        let mut payload = vec![0x93, 0x00];
        payload.extend(std::iter::repeat_n(0x91, 1000));
        payload.push(0x90);
        payload.push(0x00);
        let block_size = BlockSize::new(4).expect("a block size");
        let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size);
        let error = decoder
            .decode(&[b"kv", &0i64.to_be_bytes(), &payload])
            .expect_err("too deep");
        assert_eq!(error.name(), "malformed_engine_event");
    }
}
