//! `/v1/completions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::common::{SamplingFields, StreamOptions, UsageBody};
use super::format::{ResponseFormat, StructuredOutputs};
use super::logprobs::{CompletionLogProbs, PromptTokenLogProb};
use super::schema;

/// A text completion request.
///
/// A field this server does not implement is refused with a 400 naming it, never ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The model name.
    pub model: String,
    /// The prompt: text, several texts, token ids, or several lists of token ids. Several
    /// prompts give `n` choices each, the choices of prompt `p` at indices `p·n` to `p·n + n - 1`.
    pub prompt: Prompt,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// The most tokens to generate; OpenAI's default is 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// Return the log-probabilities of this many most likely tokens per position, in `[0, 5]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 5)]
    pub logprobs: Option<u32>,
    /// Put the prompt's text before the answer.
    #[serde(default)]
    pub echo: bool,
    /// vLLM's extension: return the log-probability of each prompt token after the first, with
    /// this many alternatives (in `[0, 20]`), as `choices[i].prompt_logprobs`. For models whose
    /// engine computes them; not with `stream: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 20)]
    pub prompt_logprobs: Option<u32>,
    /// Generate this many candidates per prompt and return the `n` with the highest
    /// cumulative log-probability; at least `n`. Not with `stream: true`. Usage counts every
    /// candidate's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub best_of: Option<u32>,
    /// The answer's format, as vLLM takes it on text completions: `text`, `json_object` or
    /// `json_schema`, enforced while sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// vLLM's other formats (a regular expression, a choice of texts, a Lark grammar) or
    /// JSON, enforced while sampling; not with `response_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_outputs: Option<StructuredOutputs>,
    /// Sampling and stopping.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Fields this server does not know (`suffix`, …); any non-null one is
    /// rejected.
    #[serde(flatten, skip_serializing)]
    #[schema(ignore)]
    pub extra: serde_json::Map<String, Value>,
}

/// The `prompt` of a completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// A finished text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Completion {
    /// The completion id (`cmpl-…`).
    pub id: String,
    /// Always `text_completion`.
    #[schema(schema_with = schema::text_completion)]
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// `n` choices per prompt, prompt by prompt.
    pub choices: Vec<CompletionChoice>,
    /// Token counts over all prompts.
    pub usage: UsageBody,
}

/// One choice of a text completion, or of a chunk of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionChoice {
    /// The choice's position: `prompt position · n + choice`.
    pub index: u32,
    /// The generated text (new text, in a chunk).
    pub text: String,
    /// Log-probabilities, when asked for.
    #[schema(required)]
    pub logprobs: Option<CompletionLogProbs>,
    /// Set on the choice's last chunk.
    #[schema(required)]
    pub finish_reason: Option<String>,
    /// With `prompt_logprobs` (vLLM's shape): per prompt token, `null` for the first, else
    /// the token's and its alternatives' entries by token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<Vec<Option<BTreeMap<String, PromptTokenLogProb>>>>,
}

/// One server-sent event of a streamed text completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionChunk {
    /// The completion id, the same in every chunk.
    pub id: String,
    /// Always `text_completion`.
    #[schema(schema_with = schema::text_completion)]
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// New text of one choice, or none in the usage chunk.
    pub choices: Vec<CompletionChoice>,
    /// Set only in the last chunk when `stream_options.include_usage` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}
