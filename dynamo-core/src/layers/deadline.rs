//! [`Deadline`]: end a request that runs past its time, and cancel its work.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::response::TokenChunk;
use crate::stream::TokenStream;

/// A [`Layer`] that wraps an engine in [`Deadline`].
///
/// ```
/// use std::time::Duration;
/// use dynamo_core::layers::DeadlineLayer;
/// use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let mut engine = ServiceBuilder::new()
///     .layer(DeadlineLayer::new().default_timeout(Duration::from_secs(60)))
///     .service(EchoEngine::new());
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2])
///     .with_max_tokens(2)
///     .with_timeout(Duration::from_secs(5));
/// assert_eq!(engine.generate_all(request).await?.tokens, [1, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer {
    default_timeout: Option<Duration>,
}

impl DeadlineLayer {
    /// A layer that enforces each request's own [`timeout`](GenerateRequest::timeout) only.
    pub fn new() -> Self {
        DeadlineLayer::default()
    }

    /// Give every request at most `timeout`; a request's own shorter timeout still wins.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            default_timeout: self.default_timeout,
        }
    }
}

/// An engine that gives each request a deadline: the shorter of the request's
/// [`timeout`](GenerateRequest::timeout) and the layer's default, counted from the call.
///
/// When the deadline passes, before the engine answers or mid-stream, the stream ends with an
/// [`Error::Timeout`] carrying the timeout, and the request's cancellation token is cancelled,
/// so the work stops wherever it runs: in process the engine watches the token; across
/// processes the request plane's client sends the worker a cancel frame. The request is passed
/// on with its `timeout` set to the time left, so a worker that wears this layer too enforces
/// the same deadline (less the time in transit) even if the cancellation does not reach it.
///
/// Put it outermost, above [`Retry`](super::Retry), so that retries share the request's time:
/// a request whose deadline has passed is cancelled, and a cancelled request is not retried.
/// See [`DeadlineLayer`] for an example.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    default_timeout: Option<Duration>,
}

impl<S> Service<GenerateRequest> for Deadline<S>
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

    fn call(&mut self, mut request: GenerateRequest) -> Self::Future {
        let timeout = match (request.timeout, self.default_timeout) {
            (Some(own), Some(default)) => own.min(default),
            (own, default) => match own.or(default) {
                Some(timeout) => timeout,
                None => return self.inner.call(request).boxed(),
            },
        };
        request.timeout = Some(timeout);
        let deadline = Instant::now() + timeout;
        let cancel = request.cancellation().clone();
        let call = self.inner.call(request);
        async move {
            let expired = Error::Timeout {
                after: Some(timeout),
            };
            let stream = tokio::select! {
                answer = call => answer?,
                () = tokio::time::sleep_until(deadline) => {
                    cancel.cancel();
                    return Err(expired);
                }
            };
            let watched = Watched {
                inner: stream,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                cancel,
                timeout,
                ended: false,
            };
            // The inner stream cancels its own work when dropped with the watcher.
            Ok(TokenStream::new(watched, CancellationToken::new()))
        }
        .boxed()
    }
}

/// A stream that ends with [`Error::Timeout`] at its deadline.
struct Watched {
    inner: TokenStream,
    sleep: Pin<Box<Sleep>>,
    cancel: CancellationToken,
    timeout: Duration,
    ended: bool,
}

impl Stream for Watched {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // A chunk already produced is delivered even if the deadline passed meanwhile.
        if let Poll::Ready(item) = self.inner.poll_next_unpin(cx) {
            if item.is_none() {
                self.ended = true;
            }
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.ended = true;
        self.cancel.cancel();
        Poll::Ready(Some(Err(Error::Timeout {
            after: Some(self.timeout),
        })))
    }
}
