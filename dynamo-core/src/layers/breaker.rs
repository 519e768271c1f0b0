//! [`CircuitBreaker`]: stop sending requests to a worker that keeps failing, for a while.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::stream::TokenStream;

use super::breaker_state::{Breaker, Outcome};

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Retryable failures in a row (overloaded, unavailable, timeout) that open the circuit.
    /// At least 1.
    pub failure_threshold: u32,
    /// Also open when this many of the last outcomes failed, whether in a row or not (a
    /// worker failing one request in two never fails five in a row); `None` (the default):
    /// only failures in a row count.
    pub failure_rate: Option<FailureRate>,
    /// How long an open circuit refuses every request before it lets one probe through.
    pub cool_down: Duration,
}

/// A failure-rate window: the circuit opens once `failures` of the last `window` outcomes
/// (successes and retryable failures; invalid and cancelled requests do not count) were
/// failures. The window starts empty whenever the circuit closes, so it opens no earlier
/// than `window` outcomes later (or after [`CircuitBreakerConfig::failure_threshold`]
/// failures in a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRate {
    /// Failures among the last `window` outcomes that open the circuit; 1 to `window`.
    pub failures: u32,
    /// How many of the latest outcomes are counted; at least 1.
    pub window: u32,
}

impl Default for CircuitBreakerConfig {
    /// Open after 5 failures in a row, probe again after 5 s; no failure-rate window.
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_rate: None,
            cool_down: Duration::from_secs(5),
        }
    }
}

impl CircuitBreakerConfig {
    /// Open after `failures` retryable failures in a row.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// Also open once `failures` of the last `window` outcomes failed (for example 10 of 20:
    /// a failure rate of 50%). `window` is at least 1 and `failures` between 1 and `window`.
    ///
    /// ```
    /// use dynamo_core::layers::{CircuitBreakerConfig, FailureRate};
    ///
    /// let config = CircuitBreakerConfig::default().failure_rate(10, 20);
    /// assert_eq!(config.failure_rate, Some(FailureRate { failures: 10, window: 20 }));
    /// ```
    pub fn failure_rate(mut self, failures: u32, window: u32) -> Self {
        let window = window.max(1);
        self.failure_rate = Some(FailureRate {
            failures: failures.clamp(1, window),
            window,
        });
        self
    }

    /// Refuse for `cool_down` once open.
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Requests pass; failures in a row are counted.
    Closed,
    /// Requests are refused with [`Error::Unavailable`] until the cool-down ends.
    Open,
    /// The cool-down has ended: the next request goes through as a probe (others are refused
    /// while it is in flight); its success closes the circuit, its failure opens it again.
    HalfOpen,
}

/// A [`Layer`] that puts a [`CircuitBreaker`] on an engine. Each service it builds has a
/// breaker of its own: put it on each worker's engine, not in front of a router.
///
/// ```
/// use dynamo_core::layers::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
/// use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let mut worker = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default().failure_threshold(3)))
///     .service(EchoEngine::new());
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2]).with_max_tokens(1);
/// assert_eq!(worker.generate_all(request).await?.tokens, [1]);
/// assert_eq!(worker.state(), CircuitState::Closed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CircuitBreakerLayer {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerLayer {
    /// A layer whose breakers follow `config`.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer { config }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        CircuitBreaker::new(inner, self.config)
    }
}

/// A circuit breaker around one worker's engine.
///
/// Closed, it passes requests and counts retryable failures in a row (a call that fails, or a
/// stream whose first item is an error); a success (a first chunk) resets the count. After
/// [`CircuitBreakerConfig::failure_threshold`] of them, or once the failures among the latest
/// outcomes reach a [`CircuitBreakerConfig::failure_rate`] window's, it opens: every call fails at once with
/// [`Error::Unavailable`], without reaching the worker, for
/// [`CircuitBreakerConfig::cool_down`]. Then it is half-open: one request goes through as a
/// probe; a success closes the circuit, a failure opens it for another cool-down. Invalid and
/// cancelled requests say nothing about the worker and do not count.
///
/// `poll_ready` is the wrapped engine's: an open breaker refuses in `call`, so a caller never
/// waits on it, and a router or a [`Retry`](super::Retry) above sees an `unavailable` error it
/// knows how to handle (send elsewhere, count towards ejection). Clones share one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> CircuitBreaker<S> {
    /// Wrap `inner` in a closed breaker following `config`.
    pub fn new(inner: S, config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            inner,
            breaker: Arc::new(Breaker::new(config, None)),
        }
    }

    /// [`new`](Self::new), with a name for its log lines (`circuit breaker of worker 3
    /// opened: …`), such as the worker it guards.
    ///
    /// ```
    /// use dynamo_core::layers::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
    /// use dynamo_core::EchoEngine;
    ///
    /// let config = CircuitBreakerConfig::default();
    /// let worker = CircuitBreaker::named(EchoEngine::new(), config, "worker 3");
    /// assert_eq!(worker.state(), CircuitState::Closed);
    /// ```
    pub fn named(inner: S, config: CircuitBreakerConfig, name: impl Into<Arc<str>>) -> Self {
        CircuitBreaker {
            inner,
            breaker: Arc::new(Breaker::new(config, Some(name.into()))),
        }
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The wrapped engine.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<GenerateRequest> for CircuitBreaker<S>
where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let Some(mut ticket) = self.breaker.admit() else {
            metrics::counter!(super::breaker_state::REFUSED).increment(1);
            let refusal = Error::unavailable("the worker's circuit breaker is open");
            return futures::future::ready(Err(refusal)).boxed();
        };
        let call = self.inner.call(request);
        async move {
            match call.await {
                Ok(stream) => Ok(ticket.watch(stream)),
                Err(error) => {
                    ticket.decide(Outcome::of(&error));
                    Err(error)
                }
            }
        }
        .boxed()
    }
}
