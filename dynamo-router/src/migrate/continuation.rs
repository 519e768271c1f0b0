//! Continuing a request on another worker: the request that picks up where a first part left
//! off, and the usage that makes the parts look like one request to the client. Shared by the
//! disaggregated router (prefill, then decode) and by migration (a failed worker, then another).

use dynamo_core::{Disaggregation, GenerateRequest, Usage};

/// `request` continued after its first `generated` tokens: the prompt with those tokens
/// appended (and counted in `resumed_tokens`), the output limits reduced by as many, and
/// `disaggregation` as the phase to run.
pub(crate) fn continuation(
    request: &GenerateRequest,
    generated: &[u32],
    disaggregation: Disaggregation,
) -> GenerateRequest {
    let mut continued = request.clone();
    let added = count(generated);
    continued.tokens = request
        .tokens
        .as_slice()
        .iter()
        .chain(generated)
        .copied()
        .collect();
    continued.limits.max_tokens = request.limits.max_tokens.map(|n| n.saturating_sub(added));
    continued.limits.min_tokens = request.limits.min_tokens.map(|n| n.saturating_sub(added));
    continued.disaggregation = disaggregation;
    // An output format's grammar reads the tokens generated so far before going on.
    continued.resumed_tokens = request.resumed_tokens.saturating_add(added);
    continued
}

/// The usage of a whole request, from the `continued` usage of its continuation (whose prompt
/// held the `added` tokens generated before) and the `cached_tokens` to report.
pub(crate) fn as_one_request(continued: Usage, added: u32, cached_tokens: u32) -> Usage {
    Usage {
        prompt_tokens: continued.prompt_tokens.saturating_sub(added),
        cached_tokens,
        completion_tokens: continued.completion_tokens.saturating_add(added),
    }
}

/// The number of `tokens`, saturating at `u32::MAX`.
pub(crate) fn count(tokens: &[u32]) -> u32 {
    u32::try_from(tokens.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_appends_the_tokens_and_reduces_the_limits() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2, 3]).with_max_tokens(5);
        request.limits.min_tokens = Some(1);
        let continued = continuation(&request, &[4, 5], Disaggregation::None);
        assert_eq!(continued.tokens.as_slice(), [1, 2, 3, 4, 5]);
        assert_eq!(continued.limits.max_tokens, Some(3));
        assert_eq!(continued.limits.min_tokens, Some(0));
        assert_eq!(continued.resumed_tokens, 2);
        let again = continuation(&continued, &[6], Disaggregation::None);
        assert_eq!(
            again.resumed_tokens, 3,
            "the output so far, across every hop"
        );
        let usage = Usage {
            prompt_tokens: 5,
            cached_tokens: 2,
            completion_tokens: 3,
        };
        let whole = as_one_request(usage, 2, 1);
        assert_eq!((whole.prompt_tokens, whole.cached_tokens), (3, 1));
        assert_eq!(whole.completion_tokens, 5);
    }
}
