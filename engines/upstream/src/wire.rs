//! The parts of `/v1/completions` answers the adapter reads. Unknown fields are ignored.

use std::borrow::Cow;
use std::collections::HashMap;

use dynamo_core::{Error, FinishReason, Token, TokenLogProb, Usage};
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
    /// vLLM with `prompt_logprobs` (a whole answer): per prompt token, `null` for the first,
    /// else entries by token id.
    #[serde(default)]
    pub(crate) prompt_logprobs: Option<Vec<Option<HashMap<String, PromptScoreWire>>>>,
}

/// One entry of vLLM's `prompt_logprobs`: a token's score and its rank at that position.
#[derive(Debug, Deserialize)]
pub(crate) struct PromptScoreWire {
    /// A `null` (a server's not-a-number) reads as NaN, as in [`chosen_beside_ids`].
    #[serde(default)]
    logprob: Option<f32>,
    #[serde(default)]
    rank: Option<u32>,
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

/// The log-probabilities of `prompt`'s tokens after the first from vLLM's `prompt_logprobs`
/// (`entries`, one per prompt token, the first `null`), with at most `top` alternatives each:
/// each position's entry of the prompt token, and the others by rank (the prompt token among
/// them when its rank is within `top`).
///
/// # Errors
///
/// [`Error::Internal`] when there is not one entry per prompt token, or a position lacks the
/// prompt token's own entry or has a key that is not a token id.
pub(crate) fn prompt_log_probs(
    entries: &[Option<HashMap<String, PromptScoreWire>>],
    prompt: &[Token],
    top: usize,
) -> Result<Vec<TokenLogProb>, Error> {
    if entries.len() != prompt.len() {
        return Err(Error::internal(format!(
            "the upstream returned prompt log-probabilities for {} of {} prompt tokens",
            entries.len(),
            prompt.len()
        )));
    }
    let score = |scored: &PromptScoreWire| scored.logprob.unwrap_or(f32::NAN);
    let mut out = Vec::with_capacity(prompt.len().saturating_sub(1));
    for (at, (entry, &token)) in entries.iter().zip(prompt).enumerate().skip(1) {
        let Some(entry) = entry else {
            return Err(Error::internal(format!(
                "the upstream returned no prompt log-probabilities for prompt token {at}"
            )));
        };
        let own = entry.get(&token.to_string()).ok_or_else(|| {
            Error::internal(format!(
                "the upstream's prompt log-probabilities at {at} lack the prompt token {token}"
            ))
        })?;
        let mut ranked = entry
            .iter()
            .map(|(id, scored)| {
                let id = id.parse::<Token>().map_err(|_| {
                    Error::internal(format!(
                        "the upstream's prompt log-probabilities name {id:?}, not a token id"
                    ))
                })?;
                Ok((scored.rank.unwrap_or(u32::MAX), id, score(scored)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        ranked.sort_unstable_by_key(|&(rank, id, _)| (rank, id));
        // The prompt token's entry comes whatever its rank; among the alternatives only
        // within `top`.
        let top: Vec<(Token, f32)> = ranked
            .iter()
            .filter(|&&(rank, id, _)| id != token || rank as usize <= top)
            .take(top)
            .map(|&(_, id, p)| (id, p))
            .collect();
        out.push(TokenLogProb {
            token,
            logprob: score(own),
            top,
            rank: own.rank,
        });
    }
    Ok(out)
}

impl LogProbsWire {
    /// One entry per token, every token and alternative written as an id
    /// (`return_tokens_as_token_ids`). A `null` score (a server's not-a-number) reads as NaN,
    /// as in [`chosen_beside_ids`].
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] when a token or an alternative is not written as an id, or when
    /// there are not as many scores as tokens: the scores were asked for as ids, and passing
    /// on some of them would lose the rest silently.
    pub(crate) fn to_log_probs(&self) -> Result<Vec<TokenLogProb>, Error> {
        if self.token_logprobs.len() != self.tokens.len() {
            return Err(Error::internal(format!(
                "the upstream returned {} log-probabilities for {} tokens",
                self.token_logprobs.len(),
                self.tokens.len()
            )));
        }
        let id = |token: &str| {
            token_id(token).ok_or_else(|| {
                Error::internal(format!(
                    "the upstream wrote a log-probability's token as {token:?}, not as \
                     token_id:N (it ignores return_tokens_as_token_ids)"
                ))
            })
        };
        self.tokens
            .iter()
            .zip(&self.token_logprobs)
            .enumerate()
            .map(|(at, (token, score))| {
                let mut top = match self.top_logprobs.get(at).and_then(Option::as_ref) {
                    Some(top) => top
                        .iter()
                        .map(|(token, p)| Ok((id(token)?, *p)))
                        .collect::<Result<Vec<_>, Error>>()?,
                    None => Vec::new(),
                };
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                Ok(TokenLogProb {
                    token: id(token)?,
                    logprob: score.unwrap_or(f32::NAN),
                    top,
                    rank: None,
                })
            })
            .collect()
    }
}

/// The chosen tokens' log-probabilities of a choice whose `logprobs` write tokens as text
/// (TensorRT-LLM): `token_logprobs[i]` is the score of `ids[i]`, the choice's new token ids.
/// Alternatives are left out: their text does not say which token id is meant. A `null` score
/// (a server's not-a-number) reads as NaN. No ids, no scores: `None`.
///
/// # Errors
///
/// [`Error::Internal`] when there are not as many scores as ids (none at all included: they
/// were asked for), rather than scores passed on for the wrong tokens.
pub(crate) fn chosen_beside_ids(
    log_probs: Option<&LogProbsWire>,
    ids: &[Token],
) -> Result<Option<Vec<TokenLogProb>>, Error> {
    let scores = log_probs.map_or(&[][..], |l| l.token_logprobs.as_slice());
    if scores.len() != ids.len() {
        return Err(Error::internal(format!(
            "the upstream's {} log-probabilities do not match its {} new token ids",
            scores.len(),
            ids.len()
        )));
    }
    if ids.is_empty() {
        return Ok(None);
    }
    let scored = ids.iter().zip(scores).map(|(&token, score)| TokenLogProb {
        token,
        logprob: score.unwrap_or(f32::NAN),
        top: Vec::new(),
        rank: None,
    });
    Ok(Some(scored.collect()))
}

fn token_id(token: &str) -> Option<Token> {
    token.strip_prefix("token_id:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use dynamo_core::ErrorClass;

    use super::*;

    fn wire(json: &str) -> LogProbsWire {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn chosen_scores_go_with_the_ids_by_place_without_alternatives() {
        let log_probs = wire(
            r#"{"text_offset":[0,3],"token_logprobs":[-1.25,null],"tokens":[" capital"," of"],
                "top_logprobs":[{" capital":-1.25," city":-0.5},{" of":-0.0625}]}"#,
        );
        let scores = chosen_beside_ids(Some(&log_probs), &[3575, 282])
            .unwrap()
            .unwrap();
        assert_eq!((scores[0].token, scores[0].logprob), (3575, -1.25));
        assert_eq!(scores[1].token, 282);
        assert!(scores[1].logprob.is_nan());
        assert!(scores.iter().all(|s| s.top.is_empty()));
        // Text tokens are not ids: vLLM's reading refuses them.
        let refused = log_probs.to_log_probs().unwrap_err();
        assert_eq!(refused.class(), ErrorClass::Internal);
        assert_eq!(chosen_beside_ids(None, &[]).unwrap(), None);
    }

    #[test]
    fn scores_that_are_not_one_per_id_are_an_internal_error() {
        let one = wire(r#"{"token_logprobs":[-0.5],"tokens":[" of"]}"#);
        for (log_probs, ids) in [
            (Some(&one), &[1, 2][..]),
            (Some(&one), &[][..]),
            (None, &[1][..]),
        ] {
            let error = chosen_beside_ids(log_probs, ids).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Internal, "{ids:?}");
        }
    }

    #[test]
    fn token_id_log_probabilities_are_read_whole_or_refused() {
        let read = wire(
            r#"{"tokens":["token_id:3575","token_id:282"],"token_logprobs":[-1.25,null],
                "top_logprobs":[{"token_id:3575":-1.25,"token_id:9":-0.5},null]}"#,
        )
        .to_log_probs()
        .unwrap();
        assert_eq!((read[0].token, read[0].logprob), (3575, -1.25));
        assert_eq!(read[0].top, vec![(9, -0.5), (3575, -1.25)]);
        assert_eq!(read[1].token, 282);
        assert!(read[1].logprob.is_nan());
        assert!(read[1].top.is_empty());
        // An alternative written as text, or a score missing, loses nothing silently.
        for refused in [
            r#"{"tokens":["token_id:1"],"token_logprobs":[-0.5],"top_logprobs":[{" of":-0.5}]}"#,
            r#"{"tokens":["token_id:1","token_id:2"],"token_logprobs":[-0.5]}"#,
        ] {
            let error = wire(refused).to_log_probs().unwrap_err();
            assert_eq!(error.class(), ErrorClass::Internal, "{refused}");
        }
    }
}
