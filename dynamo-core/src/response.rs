//! What an engine streams back: chunks of tokens, a finish reason and usage.

use serde::{Deserialize, Serialize};

use crate::disagg::KvHandoff;
use crate::tokens::Token;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The model produced its end-of-sequence token (or, for the echo engine, the prompt ran
    /// out).
    Eos,
    /// A stop token or stop string was produced.
    Stop,
    /// The output limit (`max_tokens`) or the context length was reached.
    Length,
    /// The request was cancelled before it finished.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string: `stop` for end-of-sequence and stop conditions,
    /// `length` for limits, and `cancelled` (not an OpenAI value) for cancellation.
    pub fn as_openai_str(self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV was found in a cache and not recomputed.
    pub cached_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The log-probability of one token (generated, or of the prompt), with the most likely
/// alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogProb {
    /// The token.
    pub token: Token,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens at this position with their log-probabilities, most likely first.
    #[serde(default)]
    pub top: Vec<(Token, f32)>,
    /// The token's rank among every token at this position, from 1 (the most likely), where
    /// the engine computes it (the candle engine does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
}

/// One piece of a streamed generation.
///
/// A stream carries any number of chunks; the last one has `finish_reason` set, and usually
/// `usage`. Chunks may carry no tokens (for example a final chunk that only reports the finish).
///
/// A request for several choices ([`GenerateRequest::n`](crate::GenerateRequest::n)) to an
/// engine that forks gets every choice on one stream: each chunk names its choice in `index`,
/// each choice ends with a chunk of its own with `finish_reason` and that choice's `usage`,
/// and every such finish but the stream's last has `more_choices` set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenChunk {
    /// The choice these tokens belong to, in `0..n`; 0 for a request of one choice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index: u32,
    /// On a finish chunk: other choices of the request are still generating, so this chunk
    /// ends its choice and not the stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more_choices: bool,
    /// Newly generated token ids.
    pub tokens: Vec<Token>,
    /// Their text, when the engine detokenizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Log-probabilities of `tokens`, one entry per token, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_probs: Option<Vec<TokenLogProb>>,
    /// Log-probabilities of the prompt's tokens after the first, each given the tokens before
    /// it, when [`SamplingOptions::prompt_logprobs`](crate::SamplingOptions::prompt_logprobs)
    /// asks for them: on one chunk of the first choice, before its first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_log_probs: Option<Vec<TokenLogProb>>,
    /// Set on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Token counts, normally on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// On the last chunk of a [`Disaggregation::Prefill`](crate::Disaggregation::Prefill)
    /// request: where the worker left the prompt's KV blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_handoff: Option<KvHandoff>,
}

impl TokenChunk {
    /// A chunk of one token.
    pub fn token(token: Token) -> Self {
        TokenChunk {
            tokens: vec![token],
            ..Default::default()
        }
    }

    /// A final chunk with no tokens.
    pub fn finish(reason: FinishReason, usage: Option<Usage>) -> Self {
        TokenChunk {
            finish_reason: Some(reason),
            usage,
            ..Default::default()
        }
    }

    /// Whether this is the last chunk of its stream: a finish after which no choice is left.
    pub fn is_final(&self) -> bool {
        self.finish_reason.is_some() && !self.more_choices
    }

    /// Whether this chunk ends its choice (the stream's last chunk, or a choice's finish while
    /// others go on).
    pub fn ends_choice(&self) -> bool {
        self.finish_reason.is_some()
    }
}

fn is_zero(index: &u32) -> bool {
    *index == 0
}

/// A whole generation, collected from a stream by
/// [`EngineExt::generate_all`](crate::EngineExt::generate_all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// Every generated token, in order.
    pub tokens: Vec<Token>,
    /// The concatenated text, when the engine detokenizes.
    pub text: Option<String>,
    /// Log-probabilities of every token, when requested.
    pub log_probs: Option<Vec<TokenLogProb>>,
    /// Log-probabilities of the prompt's tokens after the first, when requested.
    pub prompt_log_probs: Option<Vec<TokenLogProb>>,
    /// Why generation ended; `None` if the stream ended without saying.
    pub finish_reason: Option<FinishReason>,
    /// The last usage the stream reported.
    pub usage: Option<Usage>,
}

impl Generation {
    /// Append a chunk to the generation.
    pub fn push(&mut self, chunk: TokenChunk) {
        self.tokens.extend_from_slice(&chunk.tokens);
        if let Some(text) = chunk.text {
            self.text.get_or_insert_with(String::new).push_str(&text);
        }
        if let Some(log_probs) = chunk.log_probs {
            self.log_probs
                .get_or_insert_with(Vec::new)
                .extend(log_probs);
        }
        if let Some(log_probs) = chunk.prompt_log_probs {
            self.prompt_log_probs = Some(log_probs);
        }
        if chunk.finish_reason.is_some() {
            self.finish_reason = chunk.finish_reason;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_accumulates_chunks() {
        let mut generation = Generation::default();
        generation.push(TokenChunk {
            tokens: vec![1],
            text: Some("a".into()),
            ..Default::default()
        });
        generation.push(TokenChunk {
            tokens: vec![2, 3],
            text: Some("bc".into()),
            ..Default::default()
        });
        let usage = Usage {
            prompt_tokens: 4,
            cached_tokens: 0,
            completion_tokens: 3,
        };
        generation.push(TokenChunk::finish(FinishReason::Length, Some(usage)));
        assert_eq!(generation.tokens, [1, 2, 3]);
        assert_eq!(generation.text.as_deref(), Some("abc"));
        assert_eq!(generation.finish_reason, Some(FinishReason::Length));
        assert_eq!(generation.usage.map(|u| u.total_tokens()), Some(7));
    }

    #[test]
    fn log_probs_survive_json_as_the_request_plane_sends_them() {
        let chunk = TokenChunk {
            log_probs: Some(vec![TokenLogProb {
                token: 7,
                logprob: -0.125,
                top: vec![(7, -0.125), (9, -2.5)],
                rank: Some(1),
            }]),
            ..TokenChunk::token(7)
        };
        let json = serde_json::to_string(&chunk).unwrap();
        assert_eq!(serde_json::from_str::<TokenChunk>(&json).unwrap(), chunk);
        // A sender that does not know the alternatives leaves them out.
        let old: TokenLogProb = serde_json::from_str(r#"{"token":7,"logprob":-1.0}"#).unwrap();
        assert!(old.top.is_empty());
    }

    #[test]
    fn choices_travel_and_only_the_last_finish_ends_the_stream() {
        let first_done = TokenChunk {
            index: 2,
            more_choices: true,
            ..TokenChunk::finish(FinishReason::Stop, None)
        };
        assert!(first_done.ends_choice() && !first_done.is_final());
        let json = serde_json::to_string(&first_done).unwrap();
        assert_eq!(
            json,
            r#"{"index":2,"more_choices":true,"tokens":[],"finish_reason":"stop"}"#
        );
        assert_eq!(
            serde_json::from_str::<TokenChunk>(&json).unwrap(),
            first_done
        );
        let last = TokenChunk {
            index: 1,
            ..TokenChunk::finish(FinishReason::Length, None)
        };
        assert!(last.is_final());
    }

    #[test]
    fn chunk_json_omits_absent_fields() {
        let json = serde_json::to_string(&TokenChunk::token(7)).unwrap();
        assert_eq!(json, r#"{"tokens":[7]}"#);
        let json = serde_json::to_string(&TokenChunk::finish(FinishReason::Eos, None)).unwrap();
        assert_eq!(json, r#"{"tokens":[],"finish_reason":"eos"}"#);
    }
}
