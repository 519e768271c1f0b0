//! Fields shared by chat and text completions.

use dynamo_core::{SamplingOptions, StopConditions, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::ApiError;

/// `stop`: one string or a list of up to four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// The most stop strings a request may give (OpenAI's limit).
const MAX_STOP_STRINGS: usize = 4;

/// Written by hand: the derive cannot put the limit of four on the list variant.
impl PartialSchema for StopSequences {
    fn schema() -> RefOr<Schema> {
        let text = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
        };
        OneOfBuilder::new()
            .description(Some("One stop string, or a list of up to four"))
            .item(text())
            .item(
                ArrayBuilder::new()
                    .items(text())
                    .max_items(Some(MAX_STOP_STRINGS)),
            )
            .into()
    }
}

impl ToSchema for StopSequences {}

impl StopSequences {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopSequences::One(stop) => vec![stop],
            StopSequences::Many(stops) => stops,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk, before `[DONE]`, with the usage of the whole request.
    #[serde(default)]
    pub include_usage: bool,
}

/// `usage` in responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageBody {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
    /// How many prompt tokens were served from the KV cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV was reused from a cache.
    pub cached_tokens: u32,
}

impl From<Usage> for UsageBody {
    fn from(usage: Usage) -> Self {
        UsageBody {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
            }),
        }
    }
}

/// The sampling and stopping fields both request kinds share, with their checks, and the
/// cache salt.
///
/// `top_k`, `min_p`, `repetition_penalty`, `min_tokens` and `ignore_eos` are the vLLM
/// extensions most clients know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SamplingFields {
    /// In `[0, 2]`; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    /// In `(0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    /// At least 1; `-1` means off (vLLM's convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1)]
    pub top_k: Option<i32>,
    /// In `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f32>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// In `[-2, 2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f32>,
    /// In `[-2, 2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f32>,
    /// Greater than 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub repetition_penalty: Option<f32>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    /// Extra stop token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_token_ids: Option<Vec<u32>>,
    /// Do not stop before this many tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    /// Keep generating past end-of-sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// How many choices to generate, at least 1 and at most the gateway's limit (16 by
    /// default). Usage counts the prompt once and every choice's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub n: Option<u32>,
    /// The end user, for logs; passed on as the routing session when no other is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A cache namespace (vLLM's extension, for example one per tenant): prompt blocks are
    /// reused only by requests with the same salt, in the engine's prefix cache and in the
    /// router's index. A non-empty string; `null` is the same as no salt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "salt_string"
    )]
    #[schema(min_length = 1)]
    pub cache_salt: Option<String>,
}

/// `cache_salt` as a string or `null`; any other type is refused with a message naming the
/// field (the shared fields are flattened into each request, so serde's own message would not).
/// `/v1/responses` reads its own `cache_salt` with it too.
pub(super) fn salt_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(salt)) => Ok(Some(salt)),
        Some(other) => Err(serde::de::Error::custom(format_args!(
            "cache_salt must be a non-empty string, got {other}"
        ))),
    }
}

impl SamplingFields {
    /// Check every field and turn them into the engine's options (`n` is checked against the
    /// gateway's limit where the choices are made).
    pub(crate) fn to_options(&self) -> Result<(SamplingOptions, StopConditions), ApiError> {
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        in_range("min_p", self.min_p, 0.0, 1.0)?;
        if let Some(top_p) = self.top_p
            && !(top_p > 0.0 && top_p <= 1.0)
        {
            return Err(ApiError::invalid_field(
                "top_p",
                format!("top_p must be in (0, 1], got {top_p}"),
            ));
        }
        if let Some(penalty) = self.repetition_penalty
            && !(penalty > 0.0 && penalty.is_finite())
        {
            return Err(ApiError::invalid_field(
                "repetition_penalty",
                format!("repetition_penalty must be greater than 0, got {penalty}"),
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => None,
            Some(k) if k > 0 => Some(k.unsigned_abs()),
            Some(k) => {
                return Err(ApiError::invalid_field(
                    "top_k",
                    format!("top_k must be at least 1 (or -1 for off), got {k}"),
                ));
            }
        };
        let stop_strings = self
            .stop
            .clone()
            .map(StopSequences::into_vec)
            .unwrap_or_default();
        if stop_strings.len() > MAX_STOP_STRINGS {
            return Err(ApiError::invalid_field(
                "stop",
                format!(
                    "at most {MAX_STOP_STRINGS} stop strings, got {}",
                    stop_strings.len()
                ),
            ));
        }
        if stop_strings.iter().any(String::is_empty) {
            return Err(ApiError::invalid_field(
                "stop",
                "stop strings must not be empty",
            ));
        }
        if self.cache_salt.as_deref() == Some("") {
            return Err(ApiError::invalid_field(
                "cache_salt",
                "cache_salt must be a non-empty string",
            ));
        }
        let sampling = SamplingOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k,
            min_p: self.min_p,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            logprobs: None,
            prompt_logprobs: None,
        };
        let stop = StopConditions {
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            stop_strings,
            ignore_eos: self.ignore_eos.unwrap_or(false),
        };
        Ok((sampling, stop))
    }
}

fn in_range(name: &str, value: Option<f32>, low: f32, high: f32) -> Result<(), ApiError> {
    match value {
        Some(value) if !(low..=high).contains(&value) => Err(ApiError::invalid_field(
            name,
            format!("{name} must be in [{low}, {high}], got {value}"),
        )),
        _ => Ok(()),
    }
}

/// Reject the first field of `extra` (the fields serde did not recognise) by name.
pub(crate) fn reject_unknown(extra: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    reject_unknown_in("", extra)
}

/// Reject the first field of `extra`, the unknown fields of the object at `parent` (`""` for
/// the body), by its path (`parent.name`).
pub(crate) fn reject_unknown_in(
    parent: &str,
    extra: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    match extra.iter().find(|(_, value)| !value.is_null()) {
        Some((name, _)) => {
            let path = match parent {
                "" => name.clone(),
                parent => format!("{parent}.{name}"),
            };
            let message = format!("the field `{path}` is not supported by this server");
            Err(ApiError::invalid_field(path, message))
        }
        None => Ok(()),
    }
}
