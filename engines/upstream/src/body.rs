//! The `/v1/completions` request body, written in one pass: each field straight from the
//! request (the prompt's ids included), with no map of `serde_json` values built first.

use dynamo_core::Token;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// What a body holds, checked by the [`Dialect`](crate::Dialect) that filled it; `None`,
/// `false` and empty fields are left out. Written in this order, after the dialect's fixed
/// fields: the order a `serde_json` map with `preserve_order` kept when the body was one.
pub(crate) struct RequestBody<'a> {
    /// The dialect's fixed fields, but for those the body writes itself (its value wins).
    pub(crate) extra: &'a Map<String, Value>,
    pub(crate) model: &'a str,
    pub(crate) prompt: Prompt<'a>,
    /// Streamed (with `"stream_options": {"include_usage": true}`), or one answer.
    pub(crate) stream: bool,
    pub(crate) max_tokens: Option<u32>,
    /// The field and value that ask for the answer's token ids.
    pub(crate) ids_request: Option<(&'a str, &'a Value)>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) seed: Option<u64>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) top_k: Option<u32>,
    pub(crate) min_p: Option<f32>,
    pub(crate) repetition_penalty: Option<f32>,
    pub(crate) logprobs: Option<u32>,
    pub(crate) return_tokens_as_token_ids: bool,
    pub(crate) stop_token_ids: &'a [Token],
    pub(crate) ignore_eos: bool,
    pub(crate) min_tokens: Option<u32>,
    pub(crate) cache_salt: Option<&'a str>,
    /// The output format's field, its value written as its own text.
    pub(crate) format: Option<(&'static str, Box<RawValue>)>,
}

/// The prompt: token ids, or their text.
pub(crate) enum Prompt<'a> {
    Ids(&'a [Token]),
    Text(String),
}

impl RequestBody<'_> {
    /// The body as JSON bytes.
    pub(crate) fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        // About seven bytes a prompt id: one allocation for most bodies.
        let ids = match &self.prompt {
            Prompt::Ids(ids) => ids.len(),
            Prompt::Text(text) => text.len() / 7,
        };
        let mut bytes = Vec::with_capacity(256 + 7 * ids);
        serde_json::to_writer(&mut bytes, self)?;
        Ok(bytes)
    }

    /// Whether the body writes the field `name` itself.
    fn writes(&self, name: &str) -> bool {
        match name {
            "model" | "prompt" | "stream" => true,
            "stream_options" => self.stream,
            "max_tokens" => self.max_tokens.is_some(),
            "temperature" => self.temperature.is_some(),
            "top_p" => self.top_p.is_some(),
            "seed" => self.seed.is_some(),
            "presence_penalty" => self.presence_penalty.is_some(),
            "frequency_penalty" => self.frequency_penalty.is_some(),
            "top_k" => self.top_k.is_some(),
            "min_p" => self.min_p.is_some(),
            "repetition_penalty" => self.repetition_penalty.is_some(),
            "logprobs" => self.logprobs.is_some(),
            "return_tokens_as_token_ids" => self.return_tokens_as_token_ids,
            "stop_token_ids" => !self.stop_token_ids.is_empty(),
            "ignore_eos" => self.ignore_eos,
            "min_tokens" => self.min_tokens.is_some(),
            "cache_salt" => self.cache_salt.is_some(),
            _ => {
                self.ids_request.is_some_and(|(field, _)| field == name)
                    || self
                        .format
                        .as_ref()
                        .is_some_and(|(field, _)| *field == name)
            }
        }
    }
}

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.extra {
            if !self.writes(name) {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("model", self.model)?;
        match &self.prompt {
            Prompt::Ids(ids) => map.serialize_entry("prompt", ids)?,
            Prompt::Text(text) => map.serialize_entry("prompt", text)?,
        }
        map.serialize_entry("stream", &self.stream)?;
        if self.stream {
            map.serialize_entry("stream_options", &IncludeUsage)?;
        }
        put(&mut map, "max_tokens", self.max_tokens)?;
        if let Some((field, value)) = self.ids_request {
            map.serialize_entry(field, value)?;
        }
        put_float(&mut map, "temperature", self.temperature)?;
        put_float(&mut map, "top_p", self.top_p)?;
        put(&mut map, "seed", self.seed)?;
        put_float(&mut map, "presence_penalty", self.presence_penalty)?;
        put_float(&mut map, "frequency_penalty", self.frequency_penalty)?;
        put(&mut map, "top_k", self.top_k)?;
        put_float(&mut map, "min_p", self.min_p)?;
        put_float(&mut map, "repetition_penalty", self.repetition_penalty)?;
        put(&mut map, "logprobs", self.logprobs)?;
        if self.return_tokens_as_token_ids {
            map.serialize_entry("return_tokens_as_token_ids", &true)?;
        }
        if !self.stop_token_ids.is_empty() {
            map.serialize_entry("stop_token_ids", self.stop_token_ids)?;
        }
        if self.ignore_eos {
            map.serialize_entry("ignore_eos", &true)?;
        }
        put(&mut map, "min_tokens", self.min_tokens)?;
        put(&mut map, "cache_salt", self.cache_salt)?;
        if let Some((field, value)) = &self.format {
            map.serialize_entry(field, &**value)?;
        }
        map.end()
    }
}

/// `{"include_usage": true}`.
struct IncludeUsage;

impl Serialize for IncludeUsage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

fn put<M: SerializeMap, T: Serialize>(
    map: &mut M,
    field: &'static str,
    value: Option<T>,
) -> Result<(), M::Error> {
    match value {
        Some(value) => map.serialize_entry(field, &value),
        None => Ok(()),
    }
}

/// A sampling parameter widened to `f64`, as the body's `serde_json` values held it, so that a
/// server reads the same number as before (`0.1f32` is written `0.10000000149011612`).
fn put_float<M: SerializeMap>(
    map: &mut M,
    field: &'static str,
    value: Option<f32>,
) -> Result<(), M::Error> {
    put(map, field, value.map(f64::from))
}
