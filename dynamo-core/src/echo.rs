//! An engine that streams the prompt back, for docs, tests and demos.

use std::collections::HashSet;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::error::Error;
use crate::format::OutputFormat;
use crate::request::GenerateRequest;
use crate::response::{FinishReason, TokenChunk, TokenLogProb, Usage};
use crate::stream::TokenStream;
use crate::tokens::{Token, Tokens};

/// An [`Engine`](crate::Engine) that "generates" its prompt: one prompt token per chunk.
///
/// It behaves like a real engine in the ways tests care about:
///
/// - it validates the request ([`GenerateRequest::validate`]), and refuses an output
///   [`format`](GenerateRequest::format), which it cannot enforce;
/// - it stops after `max_tokens` tokens ([`FinishReason::Length`]), or when a stop token would
///   be produced ([`FinishReason::Stop`], the stop token is not returned) once `min_tokens` are
///   out, or at the end of the prompt ([`FinishReason::Eos`]);
/// - the final chunk carries no tokens, only the finish reason and [`Usage`];
/// - it stops with [`FinishReason::Cancelled`] when the request is cancelled, and dropping the
///   stream cancels the work;
/// - with [`SamplingOptions::logprobs`](crate::SamplingOptions::logprobs) set, each token comes
///   with synthetic log-probabilities: the token itself at `ln(1/2)` (rank 1), and as its `i`-th
///   alternative the token `token ^ i` at `ln(1/2^(i+1))` (made up, but shaped as a real
///   distribution: sorted, the chosen token first, probabilities summing below 1);
/// - with [`SamplingOptions::prompt_logprobs`](crate::SamplingOptions::prompt_logprobs) set,
///   a first chunk carries the prompt's tokens after the first with the same synthetic
///   log-probabilities.
///
/// With a token delay ([`EchoEngine::with_token_delay`]) the stream waits between tokens, like a
/// decode step; it then needs a tokio runtime with the time driver enabled.
///
/// [`EchoEngine::repeating`] makes it answer at full length instead: it goes round the prompt
/// again and again, skipping stop tokens, until `max_tokens` (a required limit in that mode).
/// That is the instant engine of overhead benches, where every answer should cost the same.
///
/// ```
/// use dynamo_core::{EchoEngine, EngineExt, FinishReason, GenerateRequest};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let mut engine = EchoEngine::new();
/// let request = GenerateRequest::new("r1", "echo", vec![5, 6, 7, 8]).with_stop_tokens([7]);
/// let generation = engine.generate_all(request).await?;
/// assert_eq!(generation.tokens, [5, 6]);
/// assert_eq!(generation.finish_reason, Some(FinishReason::Stop));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct EchoEngine {
    token_delay: Duration,
    repeating: bool,
}

impl EchoEngine {
    /// An echo engine that streams as fast as it is polled.
    pub fn new() -> Self {
        EchoEngine::default()
    }

    /// Wait `delay` before each token.
    pub fn with_token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// Answer with exactly `max_tokens` tokens: the prompt's tokens round and round, stop tokens
    /// left out. Requests must then set `max_tokens`, and a prompt made only of stop tokens ends
    /// at once with [`FinishReason::Eos`].
    ///
    /// ```
    /// use dynamo_core::{EchoEngine, EngineExt, FinishReason, GenerateRequest};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dynamo_core::Error> {
    /// let mut engine = EchoEngine::new().repeating();
    /// let request = GenerateRequest::new("r1", "echo", vec![5, 6, 7])
    ///     .with_stop_tokens([6])
    ///     .with_max_tokens(5);
    /// let generation = engine.generate_all(request).await?;
    /// assert_eq!(generation.tokens, [5, 7, 5, 7, 5]);
    /// assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    /// # Ok(())
    /// # }
    /// ```
    pub fn repeating(mut self) -> Self {
        self.repeating = true;
        self
    }
}

impl Service<GenerateRequest> for EchoEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        if let Err(error) = request.validate() {
            return ready(Err(error));
        }
        if request.format.is_some() {
            return ready(Err(OutputFormat::unsupported("echo")));
        }
        if self.repeating && request.limits.max_tokens.is_none() {
            return ready(Err(Error::invalid_request(
                "max_tokens is required by a repeating echo engine",
            )));
        }
        let cancel = request.cancellation().child_token();
        let echo = Echo {
            repeating: self.repeating,
            cursor: 0,
            max_tokens: request.limits.max_tokens.map_or(usize::MAX, |n| n as usize),
            min_tokens: request.limits.min_tokens.unwrap_or(0) as usize,
            stop_tokens: request.stop.stop_token_ids.iter().copied().collect(),
            logprobs: request.sampling.logprobs,
            prompt_logprobs: request.sampling.prompt_logprobs,
            prompt: request.tokens,
            emitted: 0,
            delay: self.token_delay,
            cancel: cancel.clone(),
            finished: false,
        };
        let stream = futures::stream::unfold(echo, |mut echo| async move {
            let chunk = echo.next_chunk().await?;
            Some((Ok(chunk), echo))
        });
        ready(Ok(TokenStream::new(stream, cancel)))
    }
}

/// The state of one echo generation.
struct Echo {
    prompt: Tokens,
    repeating: bool,
    /// Where a repeating echo reads its next token.
    cursor: usize,
    max_tokens: usize,
    min_tokens: usize,
    stop_tokens: HashSet<Token>,
    /// How many alternatives to report per token, when log-probabilities are asked for.
    logprobs: Option<u32>,
    /// How many alternatives to report per prompt token, until they are sent.
    prompt_logprobs: Option<u32>,
    emitted: usize,
    delay: Duration,
    cancel: CancellationToken,
    finished: bool,
}

impl Echo {
    async fn next_chunk(&mut self) -> Option<TokenChunk> {
        if self.finished {
            return None;
        }
        if let Some(alternatives) = self.prompt_logprobs.take() {
            let entries = self.prompt.iter().skip(1);
            let log_probs = entries
                .map(|&token| log_prob(token, alternatives))
                .collect();
            return Some(TokenChunk {
                prompt_log_probs: Some(log_probs),
                ..TokenChunk::default()
            });
        }
        if !self.delay.is_zero() {
            tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep(self.delay) => {}
            }
        }
        let reason = if self.cancel.is_cancelled() {
            FinishReason::Cancelled
        } else if self.emitted >= self.max_tokens {
            FinishReason::Length
        } else if self.repeating {
            match self.next_repeated() {
                Some(token) => {
                    self.emitted += 1;
                    return Some(self.chunk(token));
                }
                None => FinishReason::Eos,
            }
        } else {
            match self.prompt.get(self.emitted) {
                None => FinishReason::Eos,
                Some(token)
                    if self.emitted >= self.min_tokens && self.stop_tokens.contains(token) =>
                {
                    FinishReason::Stop
                }
                Some(&token) => {
                    self.emitted += 1;
                    return Some(self.chunk(token));
                }
            }
        };
        self.finished = true;
        let usage = Usage {
            prompt_tokens: saturating_u32(self.prompt.len()),
            cached_tokens: 0,
            completion_tokens: saturating_u32(self.emitted),
        };
        Some(TokenChunk::finish(reason, Some(usage)))
    }
}

/// The synthetic log-probabilities of `token`, with `alternatives` made-up alternatives.
fn log_prob(token: Token, alternatives: u32) -> TokenLogProb {
    let logprob = |rank: u32| -(rank as f32 + 1.0) * std::f32::consts::LN_2;
    TokenLogProb {
        token,
        logprob: logprob(0),
        top: (0..alternatives).map(|i| (token ^ i, logprob(i))).collect(),
        rank: Some(1),
    }
}

impl Echo {
    /// A chunk of `token`, with its synthetic log-probabilities when asked for.
    fn chunk(&self, token: Token) -> TokenChunk {
        let mut chunk = TokenChunk::token(token);
        if let Some(alternatives) = self.logprobs {
            chunk.log_probs = Some(vec![log_prob(token, alternatives)]);
        }
        chunk
    }

    /// The next prompt token round and round from `cursor`, stop tokens left out; `None` when
    /// every prompt token is a stop token.
    fn next_repeated(&mut self) -> Option<Token> {
        for _ in 0..self.prompt.len() {
            let token = self.prompt[self.cursor];
            self.cursor = (self.cursor + 1) % self.prompt.len();
            if !self.stop_tokens.contains(&token) {
                return Some(token);
            }
        }
        None
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
