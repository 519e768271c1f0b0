//! Log-probabilities of a sampled token and of the most likely alternatives.
//!
//! They are those of the model's own distribution: `log_softmax` of the raw logits, before
//! the penalties, temperature, min-p, top-k or top-p shape what the sampler draws from. This is what vLLM reports by
//! default and what OpenAI documents; a greedy token is therefore always the most likely one.
//! An output format's grammar is the exception: it masks the logits first, so the
//! log-probabilities are those of the distribution the token was drawn from (renormalised over
//! the tokens the format allows), and the alternatives are only tokens it allows.

use dynamo_core::TokenLogProb;

/// The log-probability of `token` under `logits`, with the `top` most likely tokens, most
/// likely first (ties by the lower id), and `token`'s rank in that order, from 1.
pub(crate) fn token_log_prob(logits: &[f32], token: u32, top: usize) -> TokenLogProb {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // log Σ exp(l - max), summed in f64 so that a 50k-entry vocabulary loses nothing.
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_norm = max + sum.ln() as f32;
    let logprob = |id: usize| logits.get(id).map_or(f32::NEG_INFINITY, |&l| l - log_norm);
    let own = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let ahead = logits
        .iter()
        .enumerate()
        .filter(|&(id, &l)| l > own || (l == own && id < token as usize))
        .count();
    TokenLogProb {
        token,
        logprob: logprob(token as usize),
        rank: u32::try_from(ahead + 1).ok(),
        top: top_ids(logits, top)
            .into_iter()
            .map(|id| (id as u32, logprob(id)))
            // Tokens an output format masks out are no alternatives.
            .filter(|(_, logprob)| logprob.is_finite())
            .collect(),
    }
}

/// The ids of the `k` largest logits, largest first.
fn top_ids(logits: &[f32], k: usize) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if k < ids.len() {
        ids.select_nth_unstable_by(k - 1, order);
        ids.truncate(k);
    }
    ids.sort_unstable_by(order);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_softmax_and_sorts_the_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -5.0];
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        let got = token_log_prob(&logits, 2, 3);
        assert!((got.logprob - (2.0f32.exp() / total).ln()).abs() < 1e-5);
        let ids: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!(got.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let mass: f32 = token_log_prob(&logits, 0, 5)
            .top
            .iter()
            .map(|t| t.1.exp())
            .sum();
        assert!((mass - 1.0).abs() < 1e-5);
        assert!(token_log_prob(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn a_tokens_rank_is_its_place_among_the_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -5.0];
        let order = token_log_prob(&logits, 0, 5).top;
        for (place, &(token, _)) in (1..).zip(&order) {
            assert_eq!(token_log_prob(&logits, token, 0).rank, Some(place));
        }
    }
}
