//! The JSON `trtllm-serve` answers on `POST /kv_cache_events`, as its
//! `KVCacheEventSerializer` writes it (`tensorrt_llm/_utils.py`): a list of events,
//!
//! ```json
//! [{"event_id": 7, "window_size": 32,
//!   "data": {"type": "stored", "parent_hash": null,
//!            "blocks": [{"type": "stored_block", "block_hash": 11,
//!                        "tokens": [{"type": "unique_token", "token_id": 1, "token_extra_id": 0}],
//!                        "cache_level": 0, "priority": 35}]}}]
//! ```
//!
//! and `data` is one of `created` (`num_blocks_per_cache_level`), `stored`, `removed`
//! (`block_hashes`) or `updated` (`block_hash`, `cache_level`, `priority` as
//! `{"type": "event_diff", "new_value", "old_value"}`; the C++ event sets only the diff that
//! changed, so either may be null). `attention_dp_rank` is present with
//! attention data parallelism, `layer_group_id` in the newer KV cache manager's events. Fields
//! not named here are ignored.

use serde::Deserialize;

/// One event, its `data` still untyped so that an unknown `type` is skipped, not refused.
#[derive(Debug, Deserialize)]
pub(super) struct WireEvent {
    pub(super) event_id: u64,
    pub(super) data: serde_json::Value,
    #[serde(default)]
    pub(super) window_size: Option<u64>,
    #[serde(default)]
    pub(super) attention_dp_rank: Option<u64>,
    #[serde(default)]
    pub(super) layer_group_id: Option<u64>,
}

/// `{"type": "stored", "parent_hash", "blocks"}`.
#[derive(Debug, Deserialize)]
pub(super) struct Stored {
    #[serde(default)]
    pub(super) parent_hash: Option<EngineHash>,
    pub(super) blocks: Vec<StoredBlock>,
}

/// `{"type": "stored_block", "block_hash", "tokens", "cache_level", "priority"}`; `lora_id`
/// only where a version writes it (the serializer has it commented out). A block without a
/// `cache_level` is taken as level 0.
#[derive(Debug, Deserialize)]
pub(super) struct StoredBlock {
    pub(super) block_hash: EngineHash,
    pub(super) tokens: Vec<UniqueToken>,
    #[serde(default)]
    pub(super) lora_id: Option<u64>,
    #[serde(default)]
    pub(super) cache_level: i64,
}

/// `{"type": "unique_token", "token_id", "token_extra_id"}`.
#[derive(Debug, Deserialize)]
pub(super) struct UniqueToken {
    pub(super) token_id: u64,
    #[serde(default)]
    pub(super) token_extra_id: Option<u64>,
}

/// `{"type": "removed", "block_hashes"}`.
#[derive(Debug, Deserialize)]
pub(super) struct Removed {
    pub(super) block_hashes: Vec<EngineHash>,
}

/// `{"type": "updated", "block_hash", "cache_level", "priority"}`; a null or absent
/// `cache_level` changed no level. The priority is not read.
#[derive(Debug, Deserialize)]
pub(super) struct Updated {
    pub(super) block_hash: EngineHash,
    #[serde(default)]
    pub(super) cache_level: Option<EventDiff>,
}

/// `{"type": "event_diff", "old_value", "new_value"}`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(super) struct EventDiff {
    pub(super) old_value: i64,
    pub(super) new_value: i64,
}

/// An engine block hash, opaque: an integer (TensorRT-LLM's 64-bit hash, which Python may
/// write signed) or a string (the newer KV cache manager may write a hex digest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
pub(super) enum EngineHash {
    /// Unsigned, or signed taken as its 64 bits.
    #[serde(deserialize_with = "as_u64_bits")]
    Integer(u64),
    /// A digest as text.
    Text(String),
}

/// An integer that fits 64 bits, signed or not, as its 64 bits.
fn as_u64_bits<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Unsigned(u64),
        Signed(i64),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Unsigned(value) => value,
        Either::Signed(value) => value as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_integers_of_either_sign_or_text() {
        let hashes: Vec<EngineHash> =
            serde_json::from_str(r#"[18446744073709551615, -1, 7, "9f3a"]"#).expect("hashes");
        assert_eq!(
            hashes,
            [
                EngineHash::Integer(u64::MAX),
                EngineHash::Integer(u64::MAX),
                EngineHash::Integer(7),
                EngineHash::Text("9f3a".into()),
            ]
        );
        assert!(serde_json::from_str::<EngineHash>("1.5").is_err());
    }
}
