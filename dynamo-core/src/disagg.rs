//! The vocabulary of disaggregated serving: a worker's role, the layout of its KV blocks, and
//! the hand-over of a prompt's KV blocks from a prefill worker to a decode worker.
//!
//! A disaggregated request runs in two phases. The router sends it to a prefill worker marked
//! [`Disaggregation::Prefill`]: the worker computes the prompt, streams the first token, and
//! ends its stream with a [`KvHandoff`] naming where it left the prompt's full blocks. The
//! router then sends the request, with that token appended, to a decode worker marked
//! [`Disaggregation::Decode`]: the worker pulls the blocks, computes only the tokens after the
//! last full block, and generates the rest. A decode worker that cannot pull the blocks
//! computes them itself; the request never fails for it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::events::WorkerId;
use crate::hash::SequenceHash;

/// What a worker does with the requests it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRole {
    /// Prefill and decode on the same worker (the default).
    #[default]
    Aggregated,
    /// Compute prompts and hand their KV blocks over.
    Prefill,
    /// Continue requests whose prompt another worker computed (and, when told to, compute a
    /// prompt itself).
    Decode,
}

impl WorkerRole {
    /// `aggregated`, `prefill` or `decode`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerRole::Aggregated => "aggregated",
            WorkerRole::Prefill => "prefill",
            WorkerRole::Decode => "decode",
        }
    }
}

impl fmt::Display for WorkerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker's KV blocks are laid out: two workers can exchange blocks only when their
/// layouts are equal.
///
/// ```
/// use dynamo_core::KvLayout;
///
/// let prefill = KvLayout::new("smollm2", 16, 30, 3, 64, "f32");
/// let mut decode = prefill.clone();
/// assert!(prefill.check_pairs_with(&decode).is_ok());
/// decode.block_size = 32;
/// let refused = prefill.check_pairs_with(&decode).unwrap_err();
/// assert!(refused.to_string().contains("block size"), "{refused}");
/// assert_eq!(prefill.block_bytes(), 2 * 16 * 30 * 3 * 64 * 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvLayout {
    /// The model whose KV the blocks hold.
    pub model: String,
    /// Tokens per block.
    pub block_size: u32,
    /// Transformer layers.
    pub layers: u32,
    /// Key/value heads per layer.
    pub kv_heads: u32,
    /// Dimension of one head.
    pub head_dim: u32,
    /// The element type, as the engine names it (`f32`, `bf16`, ...).
    pub dtype: String,
}

impl KvLayout {
    /// A layout from its parts.
    pub fn new(
        model: impl Into<String>,
        block_size: u32,
        layers: u32,
        kv_heads: u32,
        head_dim: u32,
        dtype: impl Into<String>,
    ) -> Self {
        KvLayout {
            model: model.into(),
            block_size,
            layers,
            kv_heads,
            head_dim,
            dtype: dtype.into(),
        }
    }

    /// Bytes of one element of `dtype`; 0 for a type this crate does not know.
    pub fn dtype_bytes(&self) -> usize {
        match self.dtype.as_str() {
            "f64" | "i64" | "u64" => 8,
            "f32" | "i32" | "u32" => 4,
            "f16" | "bf16" | "i16" | "u16" => 2,
            "f8" | "fp8" | "f8e4m3" | "f8e5m2" | "i8" | "u8" => 1,
            _ => 0,
        }
    }

    /// Bytes of one block: K and V of `block_size` tokens in every layer and head.
    pub fn block_bytes(&self) -> usize {
        2 * self.block_size as usize
            * self.layers as usize
            * self.kv_heads as usize
            * self.head_dim as usize
            * self.dtype_bytes()
    }

    /// Whether blocks of `self` can be handed to a worker of `other`.
    ///
    /// # Errors
    ///
    /// A [`LayoutMismatch`] naming the first part that differs.
    pub fn check_pairs_with(&self, other: &KvLayout) -> Result<(), LayoutMismatch> {
        let parts: [(&'static str, String, String); 6] = [
            ("model", self.model.clone(), other.model.clone()),
            (
                "block size",
                self.block_size.to_string(),
                other.block_size.to_string(),
            ),
            ("layers", self.layers.to_string(), other.layers.to_string()),
            (
                "KV heads",
                self.kv_heads.to_string(),
                other.kv_heads.to_string(),
            ),
            (
                "head dimension",
                self.head_dim.to_string(),
                other.head_dim.to_string(),
            ),
            ("dtype", self.dtype.clone(), other.dtype.clone()),
        ];
        match parts.into_iter().find(|(_, ours, theirs)| ours != theirs) {
            Some((part, ours, theirs)) => Err(LayoutMismatch { part, ours, theirs }),
            None => Ok(()),
        }
    }
}

/// Two KV layouts that cannot exchange blocks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the KV layouts differ in {part}: {ours} here, {theirs} there")]
pub struct LayoutMismatch {
    /// The part that differs (`model`, `block size`, `layers`, `KV heads`, `head dimension`,
    /// `dtype`).
    pub part: &'static str,
    /// Its value in the layout checked.
    pub ours: String,
    /// Its value in the other.
    pub theirs: String,
}

/// Where a prefill worker left a prompt's KV blocks for a decode worker to pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHandoff {
    /// The prefill worker.
    pub source: WorkerId,
    /// Its block server (`HOST:PORT`), for a decode worker in another process; `None` when the
    /// blocks can be read only in the prefill worker's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The transfer's id at the source, to pull and release its blocks by.
    pub transfer: u64,
    /// The sequence hashes of the prompt's full blocks the source holds, in prompt order from
    /// the first block.
    pub blocks: Vec<SequenceHash>,
}

/// Which phase of a disaggregated request a worker is asked to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disaggregation {
    /// The whole request (aggregated serving, or a decode worker's local prefill).
    #[default]
    None,
    /// Compute the prompt, send the first token, and end the stream with a [`KvHandoff`] in
    /// the last chunk ([`TokenChunk::kv_handoff`](crate::TokenChunk::kv_handoff)).
    Prefill,
    /// Pull the prompt's blocks named by the hand-over, then continue the request.
    Decode(KvHandoff),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_layout_is_checked() {
        let base = KvLayout::new("m", 16, 30, 3, 64, "f32");
        type Change = fn(&mut KvLayout);
        let changes: [(&str, Change); 6] = [
            ("model", |l| l.model = "other".into()),
            ("block size", |l| l.block_size = 8),
            ("layers", |l| l.layers = 2),
            ("KV heads", |l| l.kv_heads = 1),
            ("head dimension", |l| l.head_dim = 32),
            ("dtype", |l| l.dtype = "bf16".into()),
        ];
        for (part, change) in changes {
            let mut other = base.clone();
            change(&mut other);
            let mismatch = base.check_pairs_with(&other).unwrap_err();
            assert_eq!(mismatch.part, part);
        }
    }

    #[test]
    fn a_hand_over_round_trips_through_json() {
        let handoff = KvHandoff {
            source: WorkerId::new(3),
            address: Some("127.0.0.1:7000".into()),
            transfer: 42,
            blocks: vec![SequenceHash(1), SequenceHash(2)],
        };
        let phase = Disaggregation::Decode(handoff);
        let json = serde_json::to_string(&phase).unwrap();
        let back: Disaggregation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, phase);
        assert_eq!(
            serde_json::to_string(&Disaggregation::Prefill).unwrap(),
            "\"prefill\""
        );
    }
}
