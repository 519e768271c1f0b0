//! [`Retry`]: send a request again when it fails before its first token.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::stream::TokenStream;

use super::first_chunk::FirstChunk;
use super::policy::RetryPolicy;

/// How [`Retry`] retries.
///
/// The budget is tower's [`TpsBudget`](tower::retry::budget::TpsBudget): over the last
/// `budget_window`, retries may add at most `budget_ratio` of the requests sent, plus
/// `min_retries_per_sec` per second of the window as a floor for quiet periods. When every
/// worker fails, the load the fleet sees grows by that share and no more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Attempts per request, the first one included; 1 turns retries off. At least 1.
    pub max_attempts: u32,
    /// Retries allowed per request sent, over the window (0.2: one retry per five requests).
    /// Clamped to `[0, 1000]`.
    pub budget_ratio: f32,
    /// Retries per second always allowed, whatever the ratio.
    pub min_retries_per_sec: u32,
    /// How long a request counts towards the budget; clamped to 1–60 s.
    pub budget_window: Duration,
    /// The pause before each retry.
    pub backoff: Duration,
}

impl Default for RetryConfig {
    /// Three attempts, a budget of 20% plus 10 retries a second over 10 s, 10 ms backoff.
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_sec: 10,
            budget_window: Duration::from_secs(10),
            backoff: Duration::from_millis(10),
        }
    }
}

impl RetryConfig {
    /// Allow at most `attempts` attempts per request, the first one included.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Allow `ratio` retries per request and `floor` retries per second over the window.
    pub fn budget(mut self, ratio: f32, floor: u32) -> Self {
        self.budget_ratio = ratio;
        self.min_retries_per_sec = floor;
        self
    }

    /// Pause `backoff` before each retry.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
}

/// A [`Layer`] that wraps an engine in [`Retry`]. Every service it builds shares one budget.
///
/// ```
/// use dynamo_core::layers::{RetryConfig, RetryLayer};
/// use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let mut engine = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryConfig::default().max_attempts(2)))
///     .service(EchoEngine::new());
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3]).with_max_tokens(2);
/// assert_eq!(engine.generate_all(request).await?.tokens, [1, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer retrying as `config` says.
    pub fn new(config: RetryConfig) -> Self {
        RetryLayer {
            policy: RetryPolicy::new(&config),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            policy: self.policy.clone(),
            inner: FirstChunk::new(inner),
        }
    }
}

/// An engine that sends a request again, through the engine it wraps, when the request fails
/// before its first token with an overloaded or unavailable error ([`is_retried`](super::is_retried)),
/// at most [`RetryConfig::max_attempts`] times and within a retry budget shared by every clone.
///
/// The call resolves once the first chunk has arrived, so a stream that fails on its first
/// poll is retried too; a failure after the first token reaches the caller unchanged (request
/// migration, in `dynamo-router`, continues those). Each attempt watches a child of the
/// request's cancellation token: dropping a failed attempt stops only that attempt, and
/// cancelling the request stops them all and ends the retries.
///
/// Built on [`tower::retry`], with tower's [`TpsBudget`](tower::retry::budget::TpsBudget).
/// See [`RetryLayer`] for an example.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    policy: RetryPolicy,
    inner: FirstChunk<S>,
}

impl<S> Retry<S> {
    /// The wrapped engine.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

impl<S> Service<GenerateRequest> for Retry<S>
where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error> + Clone,
    S::Future: Send + 'static,
{
    type Response = TokenStream;
    type Error = Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> ResponseFuture<S> {
        // The ready service takes the request; a clone stays behind for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        // A fresh policy per request: its attempt count starts at zero, its budget is shared.
        let (policy, first) = self.policy.for_request(request);
        let mut retry = tower::retry::Retry::new(policy, ready);
        ResponseFuture {
            inner: retry.call(first),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`Retry`]: the stream of the first attempt that got as far as its first
    /// chunk, or the last attempt's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the attempt in flight and makes no further attempt.
    pub struct ResponseFuture<S>
    where
        S: Service<GenerateRequest, Response = TokenStream, Error = Error>,
        S::Future: Send,
        S::Future: 'static,
    {
        #[pin]
        inner: tower::retry::future::ResponseFuture<RetryPolicy, FirstChunk<S>, GenerateRequest>,
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error>,
    S::Future: Send + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error>,
    S::Future: Send + 'static,
{
    type Output = Result<TokenStream, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
