//! What the tests of failing workers share: a deterministic model of an answer, in which every
//! token depends on all the tokens before it, so a duplicated or missing token changes
//! everything after it.

use tokio_util::sync::CancellationToken;

/// What a worker was asked.
pub(crate) struct Attempt {
    pub(crate) worker: u64,
    pub(crate) prompt: Vec<u32>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) cancel: CancellationToken,
}

/// The next token after `tokens`.
pub(crate) fn next_token(tokens: &[u32]) -> u32 {
    let sum: u64 = tokens.iter().map(|&t| u64::from(t)).sum();
    ((sum * 31 + tokens.len() as u64) % 50_000) as u32 + 1
}

/// The answer of a healthy worker.
pub(crate) fn answer(prompt: &[u32], max_tokens: u32) -> Vec<u32> {
    let mut tokens = prompt.to_vec();
    for _ in 0..max_tokens {
        tokens.push(next_token(&tokens));
    }
    tokens.split_off(prompt.len())
}
