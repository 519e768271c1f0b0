//! The engine's log-probabilities ([`TokenLogProb`]) shaped as OpenAI's: per token with its
//! alternatives for chat, parallel lists for text completions. Token texts come from the
//! model's tokenizer, one token at a time.

use std::collections::BTreeMap;

use dynamo_core::TokenLogProb;

use crate::ApiError;
use crate::ModelEntry;
use crate::preprocess::Tokenizer;
use crate::protocol::{ChatTokenLogProb, CompletionLogProbs, PromptTokenLogProb, TopLogProb};

/// The most alternatives a chat request may ask for (`top_logprobs`), as OpenAI allows.
pub(crate) const MAX_TOP_LOGPROBS: u32 = 20;

/// The most alternatives a text completion may ask for (`logprobs`), as OpenAI allows.
pub(crate) const MAX_COMPLETION_LOGPROBS: u32 = 5;

/// A token's text and bytes. A token that is part of a UTF-8 character is written
/// `bytes:\xNN…`, as vLLM does.
fn token_text(tokenizer: &Tokenizer, id: u32) -> Result<(String, Vec<u8>), ApiError> {
    let bytes = tokenizer
        .token_bytes(id)
        .map_err(|error| dynamo_core::Error::internal(error.to_string()))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().fold(String::from("bytes:"), |text, byte| {
            text + &format!("\\x{byte:02x}")
        }),
    };
    Ok((text, bytes))
}

/// The `logprobs.content` entries of a chat answer's tokens.
pub(crate) fn chat(
    tokenizer: &Tokenizer,
    log_probs: &[TokenLogProb],
) -> Result<Vec<ChatTokenLogProb>, ApiError> {
    log_probs
        .iter()
        .map(|entry| {
            let (token, bytes) = token_text(tokenizer, entry.token)?;
            let top_logprobs = entry
                .top
                .iter()
                .map(|&(id, logprob)| {
                    let (token, bytes) = token_text(tokenizer, id)?;
                    Ok(TopLogProb {
                        token,
                        logprob,
                        bytes: Some(bytes),
                    })
                })
                .collect::<Result<_, ApiError>>()?;
            Ok(ChatTokenLogProb {
                token,
                logprob: entry.logprob,
                bytes: Some(bytes),
                top_logprobs,
            })
        })
        .collect()
}

/// Builds a text completion's `logprobs`, chunk by chunk, keeping each token's offset in the
/// choice's text.
#[derive(Debug, Default)]
pub(crate) struct CompletionShaper {
    offsets: TextOffsets,
}

impl CompletionShaper {
    /// The `logprobs` of the next tokens of the choice.
    pub(crate) fn push(
        &mut self,
        tokenizer: &Tokenizer,
        log_probs: &[TokenLogProb],
    ) -> Result<CompletionLogProbs, ApiError> {
        let mut shaped = CompletionLogProbs::default();
        for entry in log_probs {
            self.add(&mut shaped, tokenizer, entry.token, Some(entry))?;
        }
        Ok(shaped)
    }

    /// The `logprobs` of an echoed prompt: its first token (`first`, which follows nothing, so
    /// with null log-probabilities), then the others' as the engine computed them, each with
    /// at most `top` alternatives.
    pub(crate) fn push_prompt(
        &mut self,
        tokenizer: &Tokenizer,
        first: u32,
        log_probs: &[TokenLogProb],
        top: usize,
    ) -> Result<CompletionLogProbs, ApiError> {
        let mut shaped = CompletionLogProbs::default();
        self.add(&mut shaped, tokenizer, first, None)?;
        for entry in log_probs {
            let kept = TokenLogProb {
                top: entry.top.iter().take(top).copied().collect(),
                ..entry.clone()
            };
            self.add(&mut shaped, tokenizer, entry.token, Some(&kept))?;
        }
        Ok(shaped)
    }

    /// Add `token` with its log-probabilities (`None`: null) to `shaped`.
    fn add(
        &mut self,
        shaped: &mut CompletionLogProbs,
        tokenizer: &Tokenizer,
        token: u32,
        entry: Option<&TokenLogProb>,
    ) -> Result<(), ApiError> {
        let (text, bytes) = token_text(tokenizer, token)?;
        shaped.text_offset.push(self.offsets.next(&bytes));
        shaped.tokens.push(text);
        shaped.token_logprobs.push(entry.map(|entry| entry.logprob));
        let top = match entry {
            Some(entry) => {
                let mut top = BTreeMap::new();
                for &(id, logprob) in &entry.top {
                    // Tokens with the same text keep the likelier one (the first: `top` is
                    // sorted).
                    top.entry(token_text(tokenizer, id)?.0).or_insert(logprob);
                }
                Some(top)
            }
            None => None,
        };
        shaped.top_logprobs.push(top);
        Ok(())
    }
}

/// Refuse vLLM's `prompt_logprobs` above 20, for a model whose engine does not compute the
/// prompt's log-probabilities, or streamed.
pub(crate) fn check_prompt(entry: &ModelEntry, top: u32, stream: bool) -> Result<(), ApiError> {
    let refuse = |field: &str, message: String| Err(ApiError::invalid_field(field, message));
    if top > MAX_TOP_LOGPROBS {
        let most = MAX_TOP_LOGPROBS;
        return refuse(
            "prompt_logprobs",
            format!("prompt_logprobs must be at most {most}, got {top}"),
        );
    }
    if !entry.computes_prompt_logprobs() {
        return refuse(
            "prompt_logprobs",
            format!(
                "the engine of `{}` does not compute the log-probabilities of the prompt",
                entry.name
            ),
        );
    }
    if stream {
        return refuse(
            "stream",
            "prompt_logprobs are served whole; they do not work with stream: true".to_owned(),
        );
    }
    Ok(())
}

/// The prompt's log-probabilities the engine sent; an internal error if it sent none though
/// asked.
pub(crate) fn sent(log_probs: Option<&[TokenLogProb]>) -> Result<&[TokenLogProb], ApiError> {
    log_probs.ok_or_else(none_sent)
}

/// The error of an engine that sent no log-probabilities of the prompt though asked.
pub(crate) fn none_sent() -> ApiError {
    ApiError::from(dynamo_core::Error::internal(
        "the engine sent no log-probabilities of the prompt",
    ))
}

/// vLLM's `prompt_logprobs` of a prompt's tokens after the first (`log_probs`), each with at
/// most `top` alternatives: `null` for the first token, then by token id the token's entry
/// and its alternatives' (ranked by their place).
pub(crate) fn prompt(
    tokenizer: &Tokenizer,
    log_probs: &[TokenLogProb],
    top: usize,
) -> Result<Vec<Option<BTreeMap<String, PromptTokenLogProb>>>, ApiError> {
    let entry = |token: u32, logprob: f32, rank: Option<u32>| -> Result<_, ApiError> {
        let decoded_token = token_text(tokenizer, token)?.0;
        Ok((
            token.to_string(),
            PromptTokenLogProb {
                logprob,
                rank,
                decoded_token,
            },
        ))
    };
    let mut shaped = vec![None];
    for scored in log_probs {
        let mut tokens = BTreeMap::new();
        for (place, &(token, logprob)) in (1..).zip(scored.top.iter().take(top)) {
            let (id, alternative) = entry(token, logprob, Some(place))?;
            tokens.insert(id, alternative);
        }
        // The token's own entry, whatever its place among the alternatives.
        let (id, own) = entry(scored.token, scored.logprob, scored.rank)?;
        tokens.insert(id, own);
        shaped.push(Some(tokens));
    }
    Ok(shaped)
}

impl CompletionLogProbs {
    /// Add `more`'s tokens after these.
    pub(crate) fn append(&mut self, more: CompletionLogProbs) {
        self.tokens.extend(more.tokens);
        self.token_logprobs.extend(more.token_logprobs);
        self.top_logprobs.extend(more.top_logprobs);
        self.text_offset.extend(more.text_offset);
    }
}

/// Character offsets of tokens in a text made of their bytes, counting a character split
/// across tokens once, where it completes.
#[derive(Debug, Default)]
struct TextOffsets {
    chars: u32,
    partial: Vec<u8>,
}

impl TextOffsets {
    /// The offset of a token of these bytes; then moves past it.
    fn next(&mut self, bytes: &[u8]) -> u32 {
        let at = self.chars;
        self.partial.extend_from_slice(bytes);
        loop {
            let (valid, invalid) = match std::str::from_utf8(&self.partial) {
                Ok(text) => (text.len(), None),
                Err(error) => (error.valid_up_to(), error.error_len()),
            };
            let text = String::from_utf8_lossy(&self.partial[..valid]);
            let count = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
            self.chars = self.chars.saturating_add(count);
            match invalid {
                // A byte that no character can start with: one U+FFFD, as the decoder writes.
                Some(len) => {
                    self.chars = self.chars.saturating_add(1);
                    self.partial.drain(..valid + len);
                }
                None => {
                    self.partial.drain(..valid);
                    return at;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_characters_split_across_tokens_once() {
        let mut offsets = TextOffsets::default();
        let e_acute = "é".as_bytes();
        let starts: Vec<u32> = [b"ab".as_slice(), &e_acute[..1], &e_acute[1..], b"c"]
            .iter()
            .map(|bytes| offsets.next(bytes))
            .collect();
        assert_eq!(starts, [0, 2, 2, 3]);
    }

    #[test]
    fn partial_characters_are_written_as_bytes() {
        let tokenizer = Tokenizer::bytes();
        let (text, bytes) = token_text(&tokenizer, 0xc3).unwrap();
        assert_eq!(
            (text.as_str(), bytes.as_slice()),
            ("bytes:\\xc3", [0xc3].as_slice())
        );
        assert_eq!(token_text(&tokenizer, u32::from(b'a')).unwrap().0, "a");
    }
}
