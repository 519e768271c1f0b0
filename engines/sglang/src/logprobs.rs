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
//! tokens', which is what [`of_new`] reads.

use dynamo_core::{Error, Token, TokenLogProb};
use serde::de::IgnoredAny;

/// One `[logprob, token_id, text]` triple. `logprob` is `None` where SGLang's value was not
/// finite (its orjson writes NaN and ±infinity as `null`), read as negative infinity.
pub(crate) type Scored = (Option<f32>, Token, IgnoredAny);

fn logprob(scored: &Scored) -> f32 {
    scored.0.unwrap_or(f32::NEG_INFINITY)
}

/// The log-probabilities of `new`, the ids an event adds, from the event's `tokens`
/// (`output_token_logprobs`) and `top` (`output_top_logprobs`): the last `new.len()` entries
/// of each, one [`TokenLogProb`] per id, alternatives sorted most likely first.
///
/// # Errors
///
/// [`Error::Internal`] when the lists are shorter than `new` or name other tokens than `new`:
/// log-probabilities that cannot be told apart from another token's are not passed on.
pub(crate) fn of_new(
    tokens: &[Scored],
    top: Option<&[Option<Vec<Scored>>]>,
    new: &[Token],
) -> Result<Vec<TokenLogProb>, Error> {
    let count = new.len();
    let mismatch = || {
        Error::internal(format!(
            "SGLang's log-probabilities do not match its {count} new output ids"
        ))
    };
    let tokens = tail(tokens, count).ok_or_else(mismatch)?;
    let top = match top {
        Some(top) => Some(tail(top, count).ok_or_else(mismatch)?),
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
            })
        })
        .collect()
}

/// The last `count` entries of `list`, if it has that many.
fn tail<T>(list: &[T], count: usize) -> Option<&[T]> {
    list.get(list.len().checked_sub(count)?..)
}

#[cfg(test)]
mod tests {
    use dynamo_core::ErrorClass;

    use super::*;

    fn scored(json: &str) -> Vec<Scored> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn cumulative_and_incremental_lists_give_the_new_tokens_scores() {
        let cumulative = scored("[[-0.5,7,null],[-0.25,8,null],[-1.0,9,null]]");
        let incremental = scored("[[-0.25,8,null],[-1.0,9,null]]");
        for list in [cumulative, incremental] {
            let scores = of_new(&list, None, &[8, 9]).unwrap();
            let read: Vec<_> = scores.iter().map(|s| (s.token, s.logprob)).collect();
            assert_eq!(read, [(8, -0.25), (9, -1.0)]);
            assert!(scores.iter().all(|s| s.top.is_empty()));
        }
    }

    #[test]
    fn alternatives_are_sorted_and_a_null_score_is_negative_infinity() {
        let tokens = scored("[[null,4,null]]");
        let top: Vec<Option<Vec<Scored>>> =
            serde_json::from_str(r#"[[[-3.0,5," b"],[null,4,null],[-0.5,6,"c"]]]"#).unwrap();
        let scores = of_new(&tokens, Some(&top), &[4]).unwrap();
        assert_eq!(scores[0].logprob, f32::NEG_INFINITY);
        assert_eq!(
            scores[0].top,
            [(6, -0.5), (5, -3.0), (4, f32::NEG_INFINITY)]
        );
        let none: Vec<Option<Vec<Scored>>> = serde_json::from_str("[null]").unwrap();
        assert!(
            of_new(&tokens, Some(&none), &[4]).unwrap()[0]
                .top
                .is_empty()
        );
    }

    #[test]
    fn short_or_misaligned_lists_are_refused() {
        let list = scored("[[-0.5,7,null]]");
        for new in [&[7, 8][..], &[9][..]] {
            let error = of_new(&list, None, new).unwrap_err();
            assert_eq!(error.class(), ErrorClass::Internal, "{new:?}");
        }
        let top: Vec<Option<Vec<Scored>>> = Vec::new();
        assert!(of_new(&list, Some(&top), &[7]).is_err());
    }
}
