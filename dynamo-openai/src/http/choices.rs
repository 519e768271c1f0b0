//! Several choices per request: `n` (chat and text completions) and `best_of` (text
//! completions).
//!
//! A model whose engine forks ([`ModelEntry::with_forking`]) gets one engine request with
//! [`GenerateRequest::n`] set: the engine computes the prompt once and streams every choice,
//! each chunk tagged with its index. Any other engine gets one request per choice (ids
//! `<id>-<index>`, seeds `seed + index`), whose streams are merged here.

use std::sync::Arc;

use dynamo_core::{GenerateRequest, TokenLogProb, Usage};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use super::generate::{self, InFlightSlot, TextEvent};
use crate::ApiError;
use crate::registry::ModelEntry;

/// Every choice's text events, tagged with the choice's index.
pub(crate) type ChoiceStream = BoxStream<'static, Result<(u32, TextEvent), ApiError>>;

/// How many choices a request returns, and how many it generates (more with `best_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Choices {
    /// Returned (`n`).
    pub(crate) n: u32,
    /// Generated (`best_of`, else `n`).
    pub(crate) generated: u32,
}

impl Choices {
    /// Check `n` and `best_of` against each other and against `max`.
    pub(crate) fn of(n: Option<u32>, best_of: Option<u32>, max: u32) -> Result<Self, ApiError> {
        let n = n.unwrap_or(1);
        if n == 0 || n > max {
            return Err(ApiError::invalid_field(
                "n",
                format!("n must be in [1, {max}], got {n}"),
            ));
        }
        let generated = best_of.unwrap_or(n);
        if generated < n || generated > max {
            return Err(ApiError::invalid_field(
                "best_of",
                format!("best_of must be in [n, {max}] (n = {n}), got {generated}"),
            ));
        }
        Ok(Choices { n, generated })
    }

    /// Whether candidates are generated to be ranked (`best_of` above `n`).
    pub(crate) fn ranks(&self) -> bool {
        self.generated > self.n
    }
}

/// Start `choices` choices of `request`: one engine call where the engine forks, else one per
/// choice.
pub(crate) async fn start(
    entry: Arc<ModelEntry>,
    mut request: GenerateRequest,
    choices: u32,
    slot: InFlightSlot,
    endpoint: &'static str,
) -> Result<ChoiceStream, ApiError> {
    if choices <= 1 || entry.forks {
        request.n = choices.max(1);
        let text = generate::start(entry, request, Some(slot), endpoint).await?;
        return Ok(text.boxed());
    }
    let mut slot = Some(slot);
    let mut streams = Vec::with_capacity(choices as usize);
    for index in 0..choices {
        let mut one = request
            .clone()
            .with_cancellation(request.cancellation().child_token());
        one.id = format!("{}-{index}", request.id).into();
        one.n = 1;
        one.sampling.seed = request
            .sampling
            .seed
            .map(|seed| seed.wrapping_add(u64::from(index)));
        let text = generate::start(entry.clone(), one, slot.take(), endpoint).await?;
        streams.push(text.map_ok(move |(_, event)| (index, event)).boxed());
    }
    Ok(stream::select_all(streams).boxed())
}

/// Add a choice's usage to a request's, as OpenAI counts: each prompt once (with its first
/// choice), every choice's completion tokens.
pub(crate) fn add_usage(total: &mut Usage, usage: Usage, first_of_prompt: bool) {
    if first_of_prompt {
        total.prompt_tokens += usage.prompt_tokens;
        total.cached_tokens += usage.cached_tokens;
    }
    total.completion_tokens += usage.completion_tokens;
}

/// The cumulative log-probability of a choice's tokens, which `best_of` ranks by.
pub(crate) fn cumulative(log_probs: &[TokenLogProb]) -> f64 {
    log_probs.iter().map(|entry| f64::from(entry.logprob)).sum()
}

/// The `n` most likely of `candidates` (by `score`, highest first; ties keep their order).
pub(crate) fn best<T>(mut candidates: Vec<(f64, T)>, n: u32) -> Vec<T> {
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    candidates
        .into_iter()
        .take(n as usize)
        .map(|(_, candidate)| candidate)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_and_best_of_are_checked_by_name() {
        assert_eq!(
            Choices::of(None, None, 16).ok(),
            Some(Choices { n: 1, generated: 1 })
        );
        assert!(Choices::of(Some(2), Some(5), 16).is_ok_and(|c| c.ranks()));
        for (n, best_of, param) in [
            (Some(0), None, "n"),
            (Some(17), None, "n"),
            (Some(3), Some(2), "best_of"),
            (Some(1), Some(17), "best_of"),
        ] {
            let error = Choices::of(n, best_of, 16).unwrap_err();
            assert_eq!(error.body().error.param.as_deref(), Some(param));
        }
    }

    #[test]
    fn usage_counts_each_prompt_once() {
        let choice = |completion_tokens| Usage {
            prompt_tokens: 10,
            cached_tokens: 4,
            completion_tokens,
        };
        let mut total = Usage::default();
        for (index, tokens) in [3, 5, 7].into_iter().enumerate() {
            add_usage(&mut total, choice(tokens), index == 0);
        }
        assert_eq!(
            total,
            Usage {
                prompt_tokens: 10,
                cached_tokens: 4,
                completion_tokens: 15
            }
        );
    }

    #[test]
    fn best_keeps_the_most_likely_in_order() {
        let ranked = best(vec![(-3.0, 'a'), (-1.0, 'b'), (-2.0, 'c'), (-1.0, 'd')], 3);
        assert_eq!(ranked, ['b', 'd', 'c']);
    }
}
