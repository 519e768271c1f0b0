//! The parts of `/v1/completions` answers the adapter reads. Unknown fields are ignored.

use std::borrow::Cow;
use std::collections::HashMap;

use dynamo_core::{FinishReason, Token, TokenLogProb, Usage};
use serde::Deserialize;
use serde_json::Value;

/// A streamed chunk (`text_completion`), or a mid-stream error; strings borrow from the
/// event where they have no escapes.
#[derive(Debug, Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(default, borrow)]
    pub(crate) choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub(crate) usage: Option<UsageWire>,
    /// `{"error": {...}}`, as vLLM sends an error after the stream has begun.
    #[serde(default)]
    pub(crate) error: Option<Value>,
    /// `"error"` in older vLLM's flat error objects.
    #[serde(default, borrow)]
    pub(crate) object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice<'a> {
    #[serde(default)]
    pub(crate) index: u32,
    #[serde(default, borrow)]
    pub(crate) text: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the stop token id or stop string that ended the choice, `null` for EOS.
    #[serde(default)]
    pub(crate) stop_reason: Option<Value>,
    /// vLLM with `return_token_ids`: the new tokens of this chunk (of the whole answer when it
    /// is not streamed).
    #[serde(default)]
    pub(crate) token_ids: Option<Vec<Token>>,
    #[serde(default)]
    pub(crate) logprobs: Option<LogProbsWire>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsageWire {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: Option<u32>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

/// OpenAI completions' parallel lists, with tokens written `token_id:N`
/// (`return_tokens_as_token_ids`).
#[derive(Debug, Deserialize)]
pub(crate) struct LogProbsWire {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    token_logprobs: Vec<Option<f32>>,
    #[serde(default)]
    top_logprobs: Vec<Option<HashMap<String, f32>>>,
}

impl UsageWire {
    pub(crate) fn to_usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|details| details.cached_tokens)
                .unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        }
    }
}

impl Choice<'_> {
    /// Our finish reason: `stop` with no `stop_reason` is the model's end of sequence.
    pub(crate) fn finish(&self) -> Option<FinishReason> {
        let reason = self.finish_reason.as_deref()?;
        Some(match reason {
            "length" => FinishReason::Length,
            "abort" | "cancelled" => FinishReason::Cancelled,
            "stop" if self.stop_reason.as_ref().is_none_or(Value::is_null) => FinishReason::Eos,
            _ => FinishReason::Stop,
        })
    }
}

impl LogProbsWire {
    /// One entry per token, when every token is written as an id.
    pub(crate) fn to_log_probs(&self) -> Option<Vec<TokenLogProb>> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(at, token)| {
                let mut top: Vec<(Token, f32)> = self
                    .top_logprobs
                    .get(at)
                    .and_then(Option::as_ref)
                    .map(|top| {
                        top.iter()
                            .filter_map(|(token, p)| Some((token_id(token)?, *p)))
                            .collect()
                    })
                    .unwrap_or_default();
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                Some(TokenLogProb {
                    token: token_id(token)?,
                    logprob: self.token_logprobs.get(at).copied().flatten()?,
                    top,
                })
            })
            .collect()
    }
}

fn token_id(token: &str) -> Option<Token> {
    token.strip_prefix("token_id:")?.parse().ok()
}
