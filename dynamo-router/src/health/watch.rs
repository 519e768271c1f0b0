//! [`Watched`]: an attempt's stream that ends when its worker stalls, and reports how the
//! attempt went to the [`HealthTracker`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{Error, ErrorClass, TokenChunk, WorkerId};
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::Stalled;
use super::tracker::{Failure, HealthTracker};

/// A worker's stream under a stall deadline: no chunk for the stall timeout ends it with a
/// [`Stalled`] error and drops the worker's stream (cancelling the work there). The first chunk
/// resets the worker's failures in a row; an `unavailable` error, an end without a last chunk,
/// or a stall counts as a failure.
///
/// # Cancel safety
///
/// Dropping it drops the worker's stream and counts nothing: a client that leaves is not the
/// worker's fault.
pub(crate) struct Watched<S> {
    /// `None` once the attempt has ended.
    inner: Option<S>,
    worker: WorkerId,
    health: Arc<HealthTracker>,
    stall: Option<(Duration, Pin<Box<Sleep>>)>,
    answered: bool,
    finished: bool,
}

impl<S> Watched<S> {
    /// Watch `inner`, the stream of an attempt on `worker`.
    pub(crate) fn new(inner: S, worker: WorkerId, health: Arc<HealthTracker>) -> Self {
        let stall = health
            .config()
            .stall_timeout
            .map(|timeout| (timeout, Box::pin(tokio::time::sleep(timeout))));
        Watched {
            inner: Some(inner),
            worker,
            health,
            stall,
            answered: false,
            finished: false,
        }
    }

    /// No stall deadline between chunks: for a request whose answer may come whole
    /// ([`Delivery::Whole`](dynamo_core::Delivery::Whole)), whose first chunk may be its last.
    pub(crate) fn without_stall_deadline(mut self) -> Self {
        self.stall = None;
        self
    }

    fn chunk(&mut self, chunk: &TokenChunk) {
        if !self.answered {
            self.answered = true;
            self.health.succeeded(self.worker);
        }
        self.finished |= chunk.is_final();
        if let Some((timeout, sleep)) = &mut self.stall {
            sleep.as_mut().reset(Instant::now() + *timeout);
        }
    }

    fn error(&mut self, error: &Error) {
        if error.class() == ErrorClass::Unavailable {
            self.health
                .failed(self.worker, Failure::Failed, &error.to_string());
        }
        self.inner = None;
    }

    fn ended(&mut self) {
        if !self.finished {
            self.health.failed(
                self.worker,
                Failure::Failed,
                "its stream ended before its last chunk",
            );
        }
        self.inner = None;
    }
}

impl<S> Stream for Watched<S>
where
    S: Stream<Item = Result<TokenChunk, Error>> + Unpin,
{
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        // The worker's chunk first: a client that polls late still gets what is ready.
        if let Poll::Ready(item) = Pin::new(inner).poll_next(cx) {
            match &item {
                Some(Ok(chunk)) => this.chunk(chunk),
                Some(Err(error)) => this.error(error),
                None => this.ended(),
            }
            return Poll::Ready(item);
        }
        let Some((timeout, sleep)) = &mut this.stall else {
            return Poll::Pending;
        };
        std::task::ready!(sleep.as_mut().poll(cx));
        let stalled = Stalled {
            worker: this.worker,
            timeout: *timeout,
        };
        // Dropping the worker's stream cancels what is left of the attempt there.
        this.inner = None;
        this.health
            .failed(this.worker, Failure::Stalled, &stalled.to_string());
        Poll::Ready(Some(Err(stalled.into_error())))
    }
}
