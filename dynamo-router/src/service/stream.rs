//! The token stream of a routed request, which releases its booking as it goes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dynamo_core::{Error, TokenChunk, TokenStream, WorkerId};
use futures::Stream;

use super::Inner;
use crate::load::LoadGuard;

/// A request's booked load; releasing any part of it wakes the next waiting request.
#[derive(Debug)]
pub(super) struct Booked {
    worker: WorkerId,
    guard: Option<LoadGuard>,
    router: Arc<Inner>,
}

impl Booked {
    pub(super) fn new(guard: LoadGuard, router: Arc<Inner>) -> Self {
        Booked {
            worker: guard.worker(),
            guard: Some(guard),
            router,
        }
    }

    pub(super) fn worker(&self) -> WorkerId {
        self.worker
    }

    pub(super) fn first_token(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.first_token();
            self.router.waiting.wake_next();
        }
    }
}

impl Drop for Booked {
    fn drop(&mut self) {
        // Release first, then wake: the woken request must see the freed capacity.
        drop(self.guard.take());
        self.router.waiting.wake_next();
    }
}

/// A worker's token stream that ends the prefill booking at the first chunk and releases the
/// whole booking when the stream ends or is dropped.
pub(super) struct GuardedStream {
    inner: TokenStream,
    booked: Option<Booked>,
    prefilled: bool,
}

impl GuardedStream {
    pub(super) fn new(inner: TokenStream, booked: Booked) -> Self {
        GuardedStream {
            inner,
            booked: Some(booked),
            prefilled: false,
        }
    }
}

impl Stream for GuardedStream {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = std::task::ready!(Pin::new(&mut this.inner).poll_next(cx));
        match &item {
            Some(_) if !this.prefilled => {
                this.prefilled = true;
                if let Some(booked) = &mut this.booked {
                    booked.first_token();
                }
            }
            None => drop(this.booked.take()),
            Some(_) => {}
        }
        Poll::Ready(item)
    }
}
