//! `/tokenize` and `/detokenize`, as vLLM names and shapes them, for tools that count tokens.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::chat::ChatMessage;

/// A text to cut into the model's tokens, or a conversation to render with its chat template
/// first (exactly one of `prompt` and `messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The model name, as listed by `/v1/models`.
    pub model: String,
    /// A text, tokenized as `/v1/completions` tokenizes its prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A conversation, rendered and tokenized as `/v1/chat/completions` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// With `messages`: end the prompt with the opening of the assistant's turn, as a chat
    /// request does. Default true.
    #[serde(default = "yes")]
    pub add_generation_prompt: bool,
}

fn yes() -> bool {
    true
}

/// The tokens of a [`TokenizeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenizeResponse {
    /// How many tokens.
    pub count: usize,
    /// The model's context length, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u32>,
    /// The token ids.
    pub tokens: Vec<u32>,
}

/// Token ids to turn back into text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// The model name, as listed by `/v1/models`.
    pub model: String,
    /// The token ids, each inside the model's vocabulary.
    pub tokens: Vec<u32>,
}

/// The text of a [`DetokenizeRequest`]'s tokens, special tokens included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DetokenizeResponse {
    /// The text.
    pub prompt: String,
}
