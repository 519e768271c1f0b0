//! SGLang's log-probabilities as core's [`TokenLogProb`]s.
//!
//! With `return_logprob`, each answer's `meta_info` carries `output_token_logprobs`, one
//! `[logprob, token_id, text]` triple per output token, and with `top_logprobs_num` > 0
//! `output_top_logprobs`, per output token a list of such triples, most likely first, or `null`
//! (`detokenize_logprob_tokens` and `detokenize_top_logprobs_tokens` in
//! `python/sglang/srt/managers/tokenizer_manager.py`). The text is `null`: the adapter never
//! asks for `return_text_in_logprobs`.
//!
//! Depending on the version and `--incremental-streaming-output`, a streamed event's lists hold
//! every token so far or only the event's new ones; either way their last entries are the new
//! tokens', which is what [`of_new`] reads. The lists come as each entry's raw text
//! ([`crate::wire::MetaInfo`]), and only those last entries are parsed: a list that repeats every
//! score so far costs a scan of its text and a reference to each entry per event, not a value
//! built for each entry (which made a 0.5.3 stream's cost grow with the square of its length
//! in values built).

use dynamo_core::{Error, Token, TokenLogProb};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;

/// One `[logprob, token_id, text]` triple. `logprob` is `None` where SGLang's value was not
/// finite (its orjson writes NaN and ±infinity as `null`), read as negative infinity.
type Scored = (Option<f32>, Token, IgnoredAny);

/// One token's alternatives: a list of triples, or `null`.
type Alternatives = Option<Vec<Scored>>;

fn logprob(scored: &Scored) -> f32 {
    scored.0.unwrap_or(f32::NEG_INFINITY)
}

/// The log-probabilities of `new`, the ids an event adds, from the event's `tokens`
/// (`output_token_logprobs`) and `top` (`output_top_logprobs`) entries: the last `new.len()`
/// of each, parsed (the others are not), one [`TokenLogProb`] per id, alternatives sorted most
/// likely first.
///
/// # Errors
///
/// [`Error::Internal`] when the lists are shorter than `new`, name other tokens than `new`, or
/// hold entries that are not scores: log-probabilities that cannot be told apart from another
/// token's are not passed on.
pub(crate) fn of_new(
    tokens: &[&RawValue],
    top: Option<&[&RawValue]>,
    new: &[Token],
) -> Result<Vec<TokenLogProb>, Error> {
    let count = new.len();
    let mismatch = || {
        Error::internal(format!(
            "SGLang's log-probabilities do not match its {count} new output ids"
        ))
    };
    let tokens: Vec<Scored> = parse_all(tail(tokens, count).ok_or_else(mismatch)?)?;
    let top: Option<Vec<Alternatives>> = match top {
        Some(top) => Some(parse_all(tail(top, count).ok_or_else(mismatch)?)?),
        None => None,
    };
    tokens
        .iter()
        .zip(new)
        .enumerate()
        .map(|(at, (scored, &id))| {
            if scored.1 != id {
                return Err(mismatch());
            }
            let mut alternatives: Vec<(Token, f32)> = top
                .as_ref()
                .and_then(|top| top[at].as_deref())
                .unwrap_or_default()
                .iter()
                .map(|scored| (scored.1, logprob(scored)))
                .collect();
            alternatives.sort_by(|a, b| b.1.total_cmp(&a.1));
            Ok(TokenLogProb {
                token: id,
                logprob: logprob(scored),
                top: alternatives,
                rank: None,
            })
        })
        .collect()
}

/// The log-probabilities of `prompt`'s tokens after the first (the first follows nothing), from a
/// whole answer's `input_token_logprobs` (`tokens`) and `input_top_logprobs` (`top`), asked for
/// from the first prompt token (`logprob_start_len: 0`): one [`TokenLogProb`] per token, its
/// alternatives most likely first, and its rank where it is among them (SGLang gives no rank).
///
/// # Errors
///
/// As [`of_new`]: lists shorter than the prompt's tokens after the first, or naming others.
pub(crate) fn of_prompt(
    tokens: &[&RawValue],
    top: Option<&[&RawValue]>,
    prompt: &[Token],
) -> Result<Vec<TokenLogProb>, Error> {
    let after_first = prompt.get(1..).unwrap_or_default();
    let mut scores = of_new(tokens, top, after_first)?;
    for score in &mut scores {
        score.rank = (1..)
            .zip(&score.top)
            .find(|(_, (token, _))| *token == score.token)
            .map(|(rank, _)| rank);
    }
    Ok(scores)
}

/// Each entry of `entries`, parsed.
fn parse_all<T: DeserializeOwned>(entries: &[&RawValue]) -> Result<Vec<T>, Error> {
    #[cfg(test)]
    PARSED.with(|parsed| parsed.set(parsed.get() + entries.len()));
    entries
        .iter()
        .map(|entry| {
            serde_json::from_str(entry.get()).map_err(|error| {
                Error::internal("SGLang sent a log-probability entry that is not a score")
                    .with_source(error)
            })
        })
        .collect()
}

/// The last `count` entries of `list`, if it has that many.
fn tail<T>(list: &[T], count: usize) -> Option<&[T]> {
    list.get(list.len().checked_sub(count)?..)
}

#[cfg(test)]
thread_local! {
    /// Entries parsed on this thread, for the tests that measure what a stream costs.
    pub(crate) static PARSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use dynamo_core::ErrorClass;

    use super::*;

    fn entries(json: &str) -> Vec<&RawValue> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cumulative_and_incremental_lists_give_the_new_tokens_scores() {
        let cumulative = entries("[[-0.5,7,null],[-0.25,8,null],[-1.0,9,null]]");
        let incremental = entries("[[-0.25,8,null],[-1.0,9,null]]");
        for list in [cumulative, incremental] {
            let before = PARSED.get();
            let scores = of_new(&list, None, &[8, 9]).unwrap();
            let read: Vec<_> = scores.iter().map(|s| (s.token, s.logprob)).collect();
            assert_eq!(read, [(8, -0.25), (9, -1.0)]);
            assert!(scores.iter().all(|s| s.top.is_empty()));
            // The first token's entry in the cumulative list is not parsed.
            assert_eq!(PARSED.get() - before, 2);
        }
    }

    #[test]
    fn alternatives_are_sorted_and_a_null_score_is_negative_infinity() {
        let tokens = entries("[[null,4,null]]");
        let top = entries(r#"[[[-3.0,5," b"],[null,4,null],[-0.5,6,"c"]]]"#);
        let scores = of_new(&tokens, Some(&top), &[4]).unwrap();
        assert_eq!(scores[0].logprob, f32::NEG_INFINITY);
        assert_eq!(
            scores[0].top,
            [(6, -0.5), (5, -3.0), (4, f32::NEG_INFINITY)]
        );
        let none = entries("[null]");
        assert!(
            of_new(&tokens, Some(&none), &[4]).unwrap()[0]
                .top
                .is_empty()
        );
    }

    #[test]
    fn the_prompts_tokens_after_the_first_are_scored_and_ranked_among_their_alternatives() {
        let tokens = entries("[[null,1,null],[-2.5,2,null],[-0.75,3,null]]");
        let top = entries("[null,[[-0.5,9,null],[-1.25,8,null]],[[-1.0,11,null],[-0.75,3,null]]]");
        let before = PARSED.get();
        let scores = of_prompt(&tokens, Some(&top), &[1, 2, 3]).unwrap();
        let read: Vec<_> = scores
            .iter()
            .map(|s| (s.token, s.logprob, s.rank))
            .collect();
        assert_eq!(read, [(2, -2.5, None), (3, -0.75, Some(1))]);
        assert_eq!(scores[1].top, [(3, -0.75), (11, -1.0)]);
        // The first token's entries (it follows nothing) are not parsed.
        assert_eq!(PARSED.get() - before, 4);
        assert!(of_prompt(&tokens, None, &[1]).unwrap().is_empty());
        assert!(of_prompt(&tokens, None, &[1, 2, 4]).is_err());
    }

    #[test]
    fn short_misaligned_or_malformed_lists_are_refused() {
        let list = entries("[[-0.5,7,null]]");
        for new in [&[7, 8][..], &[9][..]] {
            let error = of_new(&list, None, new).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Internal, "{new:?}");
        }
        assert!(of_new(&list, Some(&[]), &[7]).is_err());
        let malformed = entries(r#"[{"logprob":-0.5},[-0.5,"seven",null]]"#);
        for new in [&[7, 8][..], &[8][..]] {
            let error = of_new(&malformed, None, new).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Internal, "{new:?}");
        }
        // A malformed entry before the new ones is not read.
        let prefix = entries(r#"[{"logprob":-0.5},[-0.25,8,null]]"#);
        assert_eq!(of_new(&prefix, None, &[8]).unwrap()[0].logprob, -0.25);
    }
}
