//! Text on the wire: for servers that take text prompts or return text without token ids.

use std::fmt;
use std::sync::Arc;

use dynamo_core::{BoxError, Token};

/// A tokenizer the adapter may use when a server speaks text instead of token ids: the
/// gateway's own, so that the ids it sees are ids of its model.
///
/// Implement it over whatever tokenizer you have (`dynamo-openai`'s, `tokenizers`, …).
pub trait TextCodec: Send + Sync + 'static {
    /// The token ids of `text`, without special tokens (no BOS).
    ///
    /// # Errors
    ///
    /// Any failure of the tokenizer.
    fn encode(&self, text: &str) -> Result<Vec<Token>, BoxError>;

    /// The text of `tokens`.
    ///
    /// # Errors
    ///
    /// Any failure of the tokenizer.
    fn decode(&self, tokens: &[Token]) -> Result<String, BoxError>;
}

/// How the prompt's token ids are sent.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum PromptFormat {
    /// As a list of token ids in `prompt` (vLLM, SGLang, TensorRT-LLM, llama.cpp, our
    /// `dynamo-serve`).
    #[default]
    TokenIds,
    /// As text, decoded with the codec, for servers that take only text.
    Text(Arc<dyn TextCodec>),
}

/// Where the generated tokens' ids come from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum OutputTokens {
    /// From each choice's `token_ids`, asked for with `"return_token_ids": true` (vLLM's
    /// extension, `vllm/entrypoints/openai/completion/protocol.py`).
    #[default]
    TokenIdsField,
    /// From each choice's `token_ids` as [`TokenIdsField`](Self::TokenIdsField) when the
    /// server returns them, else from the text as [`Retokenize`](Self::Retokenize): for a
    /// server that may predate `return_token_ids` (vLLM before 0.10.2 ignores the field and
    /// answers in text). A warning is logged the first time.
    TokenIdsOrRetokenize(Arc<dyn TextCodec>),
    /// From the text, encoded with the codec, one text delta at a time. The ids may differ
    /// from the model's own (a word split differently), but their text is the server's text,
    /// byte for byte, with a byte-level BPE tokenizer.
    Retokenize(Arc<dyn TextCodec>),
    /// None: chunks carry only text (`TokenChunk::text`). A gateway that detokenizes ids shows
    /// nothing of such a stream; use it for callers that read the text.
    TextOnly,
}

impl fmt::Debug for PromptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptFormat::TokenIds => f.write_str("TokenIds"),
            PromptFormat::Text(_) => f.write_str("Text(..)"),
        }
    }
}

impl fmt::Debug for OutputTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputTokens::TokenIdsField => f.write_str("TokenIdsField"),
            OutputTokens::TokenIdsOrRetokenize(_) => f.write_str("TokenIdsOrRetokenize(..)"),
            OutputTokens::Retokenize(_) => f.write_str("Retokenize(..)"),
            OutputTokens::TextOnly => f.write_str("TextOnly"),
        }
    }
}
