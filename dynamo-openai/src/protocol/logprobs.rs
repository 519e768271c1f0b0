//! Log-probabilities as OpenAI shapes them: per token with alternatives for chat, in parallel
//! lists for text completions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The log-probabilities of a chat choice, or of the tokens of one stream chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatLogProbs {
    /// One entry per generated token, in order.
    #[schema(required)]
    pub content: Option<Vec<ChatTokenLogProb>>,
    /// Log-probabilities of a refusal; always null here (no engine produces refusals).
    #[schema(required)]
    pub refusal: Option<Vec<ChatTokenLogProb>>,
}

/// One generated token of a chat answer, with the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatTokenLogProb {
    /// The token's text (`bytes:\xNN…` when it is part of a UTF-8 character).
    pub token: String,
    /// Its natural-log probability under the model's distribution.
    pub logprob: f32,
    /// The token's bytes, which may be part of a UTF-8 character.
    #[schema(required)]
    pub bytes: Option<Vec<u8>>,
    /// The `top_logprobs` most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<TopLogProb>,
}

/// An alternative token at a position of a chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopLogProb {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The token's bytes.
    #[schema(required)]
    pub bytes: Option<Vec<u8>>,
}

/// One token's entry in vLLM's `prompt_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PromptTokenLogProb {
    /// Its natural-log probability.
    pub logprob: f32,
    /// Its rank at this position, from 1 (the most likely), where the engine computes it.
    #[schema(required)]
    pub rank: Option<u32>,
    /// Its text.
    pub decoded_token: String,
}

/// The log-probabilities of a text completion choice (or of one chunk's tokens), as parallel
/// lists with one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompletionLogProbs {
    /// The tokens' texts.
    pub tokens: Vec<String>,
    /// Their natural-log probabilities; null for the first token of an echoed prompt, which
    /// follows nothing.
    pub token_logprobs: Vec<Option<f32>>,
    /// The `logprobs` most likely tokens at each position, as token text to log-probability;
    /// null for the first token of an echoed prompt.
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Where each token starts in the choice's text, in characters.
    pub text_offset: Vec<u32>,
}
