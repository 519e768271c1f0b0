//! One engine event's fields, read by name whichever way the engine wrote the event, and the
//! namespace (LoRA adapter, cache salt) a stored block was hashed under.
//!
//! Engines write events with msgspec. Older ones write each event as a tagged array in the
//! declaration order of its fields (`array_like`); newer ones as a map with the tag under
//! `type` and each field under its name, fields at their default left out (vLLM since its
//! PR #42892 of June 2026, SGLang from 0.5.20). The batch itself is
//! `[timestamp, events, rank]`, or a map with `events` in vLLM's newer source.

use dynamo_core::StorageTier;
use rmpv::Value;

use super::malformed;
use crate::Error;

/// `BlockStored`'s fields in the array form, in the engines' declaration order: vLLM's
/// `[tag, block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name,
/// extra_keys, group_idx, kv_cache_spec_kind, kv_cache_spec_sliding_window, locality,
/// ownership, session_id, lookahead_token_ids]` (0.34.0, which writes maps); SGLang 0.5.18
/// and 0.5.19 put `{"cache_salt": …}` at [`METADATA`] instead of a name.
pub(super) mod stored {
    pub(in super::super) const BLOCK_HASHES: usize = 1;
    pub(in super::super) const PARENT: usize = 2;
    pub(in super::super) const TOKEN_IDS: usize = 3;
    pub(in super::super) const BLOCK_SIZE: usize = 4;
    pub(in super::super) const LORA_ID: usize = 5;
    pub(in super::super) const MEDIUM: usize = 6;
    /// vLLM's `lora_name` (a string or nil) and SGLang 0.5.18's `metadata` (a map) share it.
    pub(in super::super) const LORA_NAME: usize = 7;
    /// See [`LORA_NAME`].
    pub(in super::super) const METADATA: usize = 7;
    pub(in super::super) const EXTRA_KEYS: usize = 8;
    pub(in super::super) const GROUP_IDX: usize = 9;
    pub(in super::super) const GROUP_KIND: usize = 10;
    pub(in super::super) const LOOKAHEAD_TOKEN_IDS: usize = 15;
}

/// `BlockRemoved`'s fields in the array form: `[tag, block_hashes, medium, group_idx, …]`.
pub(super) mod removed {
    pub(in super::super) const BLOCK_HASHES: usize = 1;
    pub(in super::super) const MEDIUM: usize = 2;
    pub(in super::super) const GROUP_IDX: usize = 3;
}

/// The events of a batch: `[timestamp, events, rank]`, or a map with `events`.
pub(super) fn batch_events(batch: &Value) -> Option<&[Value]> {
    match batch {
        Value::Array(fields) => fields.get(1),
        Value::Map(entries) => lookup(entries, "events"),
        _ => None,
    }
    .and_then(Value::as_array)
    .map(Vec::as_slice)
}

/// One event, as a tagged array or as a map.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event<'a> {
    /// `[tag, field, …]`.
    Array(&'a [Value]),
    /// `{"type": tag, name: field, …}`.
    Map(&'a [(Value, Value)]),
}

impl<'a> Event<'a> {
    /// `None` when `value` is neither an array nor a map.
    pub(super) fn new(value: &'a Value) -> Option<Self> {
        match value {
            Value::Array(fields) => Some(Event::Array(fields)),
            Value::Map(entries) => Some(Event::Map(entries)),
            _ => None,
        }
    }

    /// The event's kind (`BlockStored`, …).
    pub(super) fn kind(&self) -> Option<&'a str> {
        match self {
            Event::Array(fields) => fields.first(),
            Event::Map(entries) => lookup(entries, "type"),
        }
        .and_then(Value::as_str)
    }

    /// The field `name`, found at `position` in the array form; `None` when the event does not
    /// carry it (a shorter array, a map without the key).
    pub(super) fn field(&self, name: &str, position: usize) -> Option<&'a Value> {
        match self {
            Event::Array(fields) => fields.get(position),
            Event::Map(entries) => lookup(entries, name),
        }
    }

    /// The KV cache group the event belongs to (vLLM's `group_idx`, found at `position` in the
    /// array form); `None` when the event names none (an engine with one group, SGLang).
    pub(super) fn group(&self, position: usize) -> Option<i64> {
        self.field("group_idx", position).and_then(Value::as_i64)
    }

    /// The kind of a stored block's cache group (vLLM's `kv_cache_spec_kind`:
    /// `full_attention`, `sliding_window`, `mamba`, …), when the engine names it.
    pub(super) fn group_kind(&self) -> Option<&'a str> {
        self.field("kv_cache_spec_kind", stored::GROUP_KIND)
            .and_then(Value::as_str)
    }

    /// Whether the engine hashed the stored blocks with tokens past them: vLLM's
    /// `lookahead_token_ids` (0.34.0), one list per block of the tokens after it that its hash
    /// covers, set when the server hashes with lookahead (EAGLE-style speculative decoding with
    /// prefix caching) and nil otherwise. Any list with a token, or a value of another shape,
    /// says yes: such a block is reused only by a request whose next tokens match too.
    pub(super) fn hashes_lookahead(&self) -> bool {
        match self.field("lookahead_token_ids", stored::LOOKAHEAD_TOKEN_IDS) {
            None | Some(Value::Nil) => false,
            Some(Value::Array(lists)) => !lists
                .iter()
                .all(|list| list.as_array().is_some_and(Vec::is_empty)),
            Some(_) => true,
        }
    }

    /// The LoRA adapter a stored block was hashed with: its name (`lora_name`: vLLM, SGLang
    /// from 0.5.22), or else the decimal form of its id (`lora_id`), the only name older engines
    /// give.
    pub(super) fn lora_name(&self) -> Option<LoraName<'a>> {
        if let Some(name) = self
            .field("lora_name", stored::LORA_NAME)
            .and_then(Value::as_str)
        {
            return Some(LoraName::Name(name));
        }
        self.field("lora_id", stored::LORA_ID)
            .and_then(Value::as_i64)
            .map(LoraName::Id)
    }

    /// The cache salt the event names for its blocks: SGLang's `cache_salt` (a field of the
    /// map from 0.5.20, `metadata.cache_salt` in the arrays of 0.5.18 and 0.5.19), or vLLM's,
    /// which is among the extra keys of a sequence's first block only (`first_block`: the event
    /// has no parent).
    pub(super) fn cache_salt(&self, first_block: bool) -> Option<&'a str> {
        let sglang = match self {
            Event::Map(entries) => lookup(entries, "cache_salt"),
            Event::Array(fields) => match fields.get(stored::METADATA) {
                Some(Value::Map(metadata)) => lookup(metadata, "cache_salt"),
                _ => None,
            },
        };
        if let Some(salt) = sglang.and_then(Value::as_str) {
            return Some(salt);
        }
        if !first_block {
            return None;
        }
        let lora = self
            .field("lora_name", stored::LORA_NAME)
            .and_then(Value::as_str);
        let keys = self.field("extra_keys", stored::EXTRA_KEYS)?.as_array()?;
        vllm_salt(keys.first()?, lora)
    }
}

/// A LoRA adapter as an event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoraName<'a> {
    /// By name.
    Name(&'a str),
    /// By number only.
    Id(i64),
}

/// The salt among a first block's vLLM extra keys. vLLM builds them as the LoRA name, the
/// multimodal keys (`[identifier, offset]` pairs), the salt (first block only), and the prompt
/// embeddings' hash (bytes): the salt is the one string left once the LoRA name is set aside.
/// Two or more strings left (multimodal identifiers written as bare strings, as some vLLM
/// versions did) are ambiguous and read as no salt.
fn vllm_salt<'a>(keys: &'a Value, lora: Option<&str>) -> Option<&'a str> {
    let mut strings = keys.as_array()?.iter().filter_map(Value::as_str);
    let mut first = strings.next()?;
    if lora.is_some_and(|lora| lora == first) {
        first = strings.next()?;
    }
    match strings.next() {
        None => Some(first),
        Some(_) => None,
    }
}

/// A stored event's token ids: plain ids, or SGLang's pairs under EAGLE speculative decoding.
///
/// With EAGLE, SGLang's radix cache keys a position by the bigram `(t_i, t_i+1)` of its token
/// and the next one, and its stored events carry a page's bigrams as `token_ids` (0.5.6 to
/// 0.5.23: `[[t_s, t_s+1], [t_s+1, t_s+2], …]`, `block_size` the count of pairs). The page holds
/// the KV of positions `s…` (the cache's value for bigram `i` is position `i`'s slot), so its
/// tokens are the pairs' first elements. Pairs that do not chain (each one's second element the
/// next one's first) are refused.
pub(super) fn token_ids(value: &Value) -> Result<Vec<u32>, &'static str> {
    let items = value.as_array().ok_or("token_ids is not an array")?;
    let token = |value: &Value| value.as_u64().and_then(|t| u32::try_from(t).ok());
    if !items.first().is_some_and(|first| first.is_array()) {
        return items
            .iter()
            .map(token)
            .collect::<Option<_>>()
            .ok_or("a token id is not a u32");
    }
    let pairs: Vec<(u32, u32)> = items
        .iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([first, second]) => Some((token(first)?, token(second)?)),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or("a token pair is not two u32 token ids")?;
    if pairs.windows(2).any(|two| two[0].1 != two[1].0) {
        return Err("token pairs do not chain");
    }
    Ok(pairs.into_iter().map(|(first, _)| first).collect())
}

fn lookup<'a>(entries: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(key, _)| key.as_str() == Some(name))
        .map(|(_, value)| value)
}

pub(super) fn engine_hashes(value: Option<&Value>) -> Result<Vec<u64>, Error> {
    value
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("block_hashes is not an array"))?
        .iter()
        .map(engine_hash)
        .collect()
}

/// An engine's block hash as a map key: integers as their 64 bits, bytes hashed down to 64.
pub(super) fn engine_hash(value: &Value) -> Result<u64, Error> {
    match value {
        Value::Integer(int) => int
            .as_u64()
            .or_else(|| int.as_i64().map(|signed| signed as u64))
            .ok_or_else(|| malformed("a block hash is out of range")),
        Value::Binary(bytes) => Ok(xxhash_rust::xxh3::xxh3_64(bytes)),
        _ => Err(malformed("a block hash is neither an integer nor bytes")),
    }
}

/// The tier a `medium` names, in any case: `GPU`, or none (nil or no field), the device;
/// vLLM's `CPU` and SGLang's `CPU_PINNED` (0.5.18 and later) the host; `DISK`, and vLLM's
/// `STORAGE` (its offloading connector's file-backed tier, 0.34.0) the disk; SGLang's
/// `EXTERNAL` (a shared or remote pool) the remote tier. `None` for any other medium, or one
/// that is not a string: the decoder does not know where such blocks are.
pub(super) fn tier(value: Option<&Value>) -> Option<StorageTier> {
    let medium = match value {
        None | Some(Value::Nil) => return Some(StorageTier::Device),
        Some(value) => value.as_str()?,
    };
    let is = |name: &str| medium.eq_ignore_ascii_case(name);
    if is("gpu") {
        Some(StorageTier::Device)
    } else if is("cpu") || is("cpu_pinned") {
        Some(StorageTier::Host)
    } else if is("disk") || is("storage") {
        Some(StorageTier::Disk)
    } else if is("external") {
        Some(StorageTier::Remote)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookahead_is_any_token_past_a_block_or_a_shape_not_understood() {
        let event = |lookahead: Value| {
            Value::Map(vec![
                (Value::from("type"), Value::from("BlockStored")),
                (Value::from("lookahead_token_ids"), lookahead),
            ])
        };
        let list = |items: Vec<Value>| Value::Array(items);
        let cases = [
            (Value::Nil, false),
            (list(vec![]), false),
            (list(vec![list(vec![]), list(vec![])]), false),
            (list(vec![list(vec![]), list(vec![Value::from(9)])]), true),
            (list(vec![Value::from(9)]), true),
            (Value::from("yes"), true),
        ];
        for (lookahead, expected) in cases {
            let value = event(lookahead.clone());
            let event = Event::new(&value).expect("a map");
            assert_eq!(event.hashes_lookahead(), expected, "{lookahead}");
        }
        let without = Value::Map(vec![(Value::from("type"), Value::from("BlockStored"))]);
        assert!(!Event::new(&without).expect("a map").hashes_lookahead());
    }

    #[test]
    fn each_engine_medium_names_its_tier() {
        let tiers: Vec<Option<StorageTier>> = [
            Some(Value::from("GPU")),
            Some(Value::from("CPU")),
            Some(Value::from("cpu")),
            Some(Value::from("CPU_PINNED")),
            Some(Value::from("DISK")),
            Some(Value::from("STORAGE")),
            Some(Value::from("EXTERNAL")),
            Some(Value::Nil),
            None,
            Some(Value::from("something-new")),
            Some(Value::from(1)),
        ]
        .iter()
        .map(|medium| tier(medium.as_ref()))
        .collect();
        use StorageTier::{Device, Disk, Host, Remote};
        assert_eq!(
            tiers,
            [
                Some(Device),
                Some(Host),
                Some(Host),
                Some(Host),
                Some(Disk),
                Some(Disk),
                Some(Remote),
                Some(Device),
                Some(Device),
                None,
                None,
            ]
        );
    }
}
