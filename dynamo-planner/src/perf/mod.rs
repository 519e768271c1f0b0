//! Performance models: what one worker achieves, measured by `profile`, interpolated.
//!
//! A [`PerfProfile`] holds two tables measured on one worker:
//!
//! - **prefill** ([`PrefillPoint`]): one request at a time, by prompt length — time to first
//!   token and prefill throughput;
//! - **decode** ([`DecodePoint`]): by context length and batch size (concurrency) — time
//!   between output tokens (ITL), the KV cache usage it reached, and decode throughput.
//!
//! The planner reads it through [`PerfProfile::prefill_tokens_per_s`],
//! [`PerfProfile::decode_tokens_per_s_within`] and their kin, which interpolate linearly
//! between measured points (bilinearly for decode) and clamp at the table's edges, with two
//! exceptions: past the longest profiled prompt, the time to first token grows at that prompt's
//! throughput (a prompt twice as long takes about twice as long, where a clamp would say it
//! takes no longer); past the longest profiled context, a batch reads as the batch of that
//! context which holds as many tokens (twice the context, half the requests at the same pace).
//! What it observes corrects the model through [`Correction`] factors.
//!
//! The JSON format, as [`PerfProfile::to_json`] writes it:
//!
//! ```json
//! {
//!   "engine": "mocker",
//!   "prefill": [{ "input_tokens": 512, "ttft_ms": 40.0, "tokens_per_s": 12800.0 }],
//!   "decode": [{ "context_tokens": 1024, "concurrency": 8, "kv_usage": 0.1,
//!                "itl_ms": 20.0, "tokens_per_s": 400.0 }]
//! }
//! ```
//!
//! Prefill points are sorted by `input_tokens`, decode points by `context_tokens` then
//! `concurrency`, each pair at most once; loading checks it.

mod correction;
mod interpolate;
mod measure;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use correction::Correction;
pub use measure::{BatchLimits, LiveSweep, measure_engine};

use crate::Error;

/// Prefill on one worker, one request at a time, at one prompt length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefillPoint {
    /// Prompt length, in tokens (none cached).
    pub input_tokens: u64,
    /// Time to first token, in milliseconds.
    pub ttft_ms: f64,
    /// Prompt tokens computed per second.
    pub tokens_per_s: f64,
}

/// Decode on one worker at one context length and batch size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodePoint {
    /// Tokens in each request's context (prompt and output so far).
    pub context_tokens: u64,
    /// Requests decoding together.
    pub concurrency: u32,
    /// The fraction of the worker's KV blocks in use, in `0..=1`.
    pub kv_usage: f64,
    /// Time between output tokens, in milliseconds.
    pub itl_ms: f64,
    /// Output tokens per second, all requests together.
    pub tokens_per_s: f64,
}

/// One worker's measured performance; see the [module docs](self) for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct PerfProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<String>,
    prefill: Vec<PrefillPoint>,
    decode: Vec<DecodePoint>,
    /// Where each context length's decode points start and end in `decode`.
    #[serde(skip)]
    rows: Vec<Row>,
}

/// The decode points of one context length: `decode[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    context_tokens: u64,
    start: usize,
    end: usize,
}

/// The profile as read, before it is checked.
#[derive(Deserialize)]
struct Unchecked {
    #[serde(default)]
    engine: Option<String>,
    prefill: Vec<PrefillPoint>,
    decode: Vec<DecodePoint>,
}

impl TryFrom<Unchecked> for PerfProfile {
    type Error = Error;

    fn try_from(raw: Unchecked) -> Result<Self, Error> {
        let profile = PerfProfile::new(raw.prefill, raw.decode)?;
        Ok(match raw.engine {
            Some(engine) => profile.with_engine(engine),
            None => profile,
        })
    }
}

fn invalid(reason: String) -> Error {
    Error::Profile { reason }
}

impl PerfProfile {
    /// A profile of these tables.
    ///
    /// # Errors
    ///
    /// [`Error::Profile`] when a table is empty or not sorted (prefill by `input_tokens`,
    /// decode by `context_tokens` then `concurrency`, no pair twice), or a figure is not
    /// finite, a time or throughput is not positive, a length or concurrency is 0, or a KV
    /// usage is outside `0..=1`.
    pub fn new(prefill: Vec<PrefillPoint>, decode: Vec<DecodePoint>) -> Result<Self, Error> {
        if prefill.is_empty() || decode.is_empty() {
            return Err(invalid(format!(
                "it needs prefill and decode points; it has {} and {}",
                prefill.len(),
                decode.len()
            )));
        }
        for (i, p) in prefill.iter().enumerate() {
            let positive = p.ttft_ms > 0.0 && p.tokens_per_s > 0.0;
            if p.input_tokens == 0
                || !p.ttft_ms.is_finite()
                || !p.tokens_per_s.is_finite()
                || !positive
            {
                return Err(invalid(format!("prefill point {i} is not usable: {p:?}")));
            }
            if i > 0 && prefill[i - 1].input_tokens >= p.input_tokens {
                return Err(invalid(format!(
                    "prefill points must be sorted by input_tokens, without repeats; point {i} has {} after {}",
                    p.input_tokens,
                    prefill[i - 1].input_tokens
                )));
            }
        }
        for (i, p) in decode.iter().enumerate() {
            let finite = p.itl_ms.is_finite() && p.tokens_per_s.is_finite();
            let usable = finite
                && p.itl_ms > 0.0
                && p.tokens_per_s > 0.0
                && (0.0..=1.0).contains(&p.kv_usage)
                && p.context_tokens > 0
                && p.concurrency > 0;
            if !usable {
                return Err(invalid(format!("decode point {i} is not usable: {p:?}")));
            }
            if i > 0 {
                let before = &decode[i - 1];
                if (before.context_tokens, before.concurrency) >= (p.context_tokens, p.concurrency)
                {
                    return Err(invalid(format!(
                        "decode points must be sorted by context_tokens then concurrency, without repeats; point {i} ({}, {}) comes after ({}, {})",
                        p.context_tokens, p.concurrency, before.context_tokens, before.concurrency
                    )));
                }
            }
        }
        let mut rows: Vec<Row> = Vec::new();
        for (i, p) in decode.iter().enumerate() {
            match rows.last_mut() {
                Some(row) if row.context_tokens == p.context_tokens => row.end = i + 1,
                _ => rows.push(Row {
                    context_tokens: p.context_tokens,
                    start: i,
                    end: i + 1,
                }),
            }
        }
        Ok(PerfProfile {
            engine: None,
            prefill,
            decode,
            rows,
        })
    }

    /// The same profile, saying which engine (and model) it measured.
    pub fn with_engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = Some(engine.into());
        self
    }

    /// The engine (and model) it measured, if it says.
    pub fn engine(&self) -> Option<&str> {
        self.engine.as_deref()
    }

    /// The prefill table, sorted by prompt length.
    pub fn prefill(&self) -> &[PrefillPoint] {
        &self.prefill
    }

    /// The decode table, sorted by context length then concurrency.
    pub fn decode(&self) -> &[DecodePoint] {
        &self.decode
    }

    /// A profile from its JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Profile`] when the text is not a profile or the profile is not usable (see
    /// [`PerfProfile::new`]).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))
    }

    /// A profile from a JSON file.
    ///
    /// # Errors
    ///
    /// [`Error::Profile`] when the file cannot be read or holds no usable profile.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        PerfProfile::from_json(&text).map_err(|e| match e {
            Error::Profile { reason } => invalid(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// The profile as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Plain numbers, strings and vectors always serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod tests;
