//! The token stream of a routed request, which releases its booking as it goes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use dynamo_core::{Error, GenerateRequest, TokenChunk, TokenStream, WorkerId};
use futures::Stream;
use tokio_util::sync::CancellationToken;

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

    /// `ended` choices of a forked request ended before the others.
    fn end_sequences(&mut self, ended: u32) {
        if let Some(guard) = &mut self.guard {
            guard.end_sequences(ended);
            self.router.waiting.wake_next();
        }
    }
}

/// The choices of a request forked into `n` that have not ended, so that each one that ends
/// before the others (its finish chunk, or the frontend's cancel of it: a stop string it
/// matched) gives back its sequence at once. Empty for a request of one choice.
#[derive(Debug, Default)]
pub(super) struct OpenChoices {
    /// Per choice: whether it ended, and the frontend's token for it, if it made one.
    choices: Vec<(bool, Option<CancellationToken>)>,
    open: u32,
}

impl OpenChoices {
    pub(super) fn of(request: &GenerateRequest) -> Self {
        if request.n <= 1 {
            return OpenChoices::default();
        }
        let choices = (0..request.n)
            .map(|index| (false, request.choice_cancellation(index).cloned()))
            .collect();
        OpenChoices {
            choices,
            open: request.n,
        }
    }

    /// How many choices ended, of those open before `chunk` came, leaving at least one open.
    fn ended_by(&mut self, chunk: &TokenChunk) -> u32 {
        if self.choices.is_empty() {
            return 0;
        }
        let mut ended = 0;
        if chunk.finish_reason.is_some() && chunk.more_choices {
            ended += self.end(chunk.index as usize);
        }
        for index in 0..self.choices.len() {
            if self.choices[index]
                .1
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                ended += self.end(index);
            }
        }
        ended
    }

    /// End the choice `index`: 1 if it was open and is not the last open, else 0.
    fn end(&mut self, index: usize) -> u32 {
        match self.choices.get_mut(index) {
            Some((ended, _)) if !*ended => {
                *ended = true;
                self.open -= 1;
                u32::from(self.open > 0)
            }
            _ => 0,
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

/// A worker's token stream that ends the prefill booking at the first chunk, a forked
/// request's sequences as its choices end, and releases the whole booking when the stream ends
/// or is dropped.
pub(super) struct GuardedStream {
    inner: TokenStream,
    booked: Option<Booked>,
    prefilled: bool,
    choices: OpenChoices,
}

impl GuardedStream {
    pub(super) fn new(inner: TokenStream, booked: Booked, choices: OpenChoices) -> Self {
        GuardedStream {
            inner,
            booked: Some(booked),
            prefilled: false,
            choices,
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
        if let Some(Ok(chunk)) = &item {
            let ended = this.choices.ended_by(chunk);
            if ended > 0
                && let Some(booked) = &mut this.booked
            {
                booked.end_sequences(ended);
            }
        }
        Poll::Ready(item)
    }
}
