//! The circuit breaker's state machine, and the ticket each admitted request carries until its
//! outcome is known.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::Error;
use crate::response::TokenChunk;
use crate::stream::TokenStream;

use super::{CircuitBreakerConfig, CircuitState};

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// What happened to an admitted request, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The worker answered (its first chunk, or a clean end).
    Success,
    /// The worker failed with a retryable class (overloaded, unavailable, timeout).
    Failure,
    /// Nothing learned about the worker: an invalid or cancelled request, or a caller that
    /// dropped the request first.
    Neutral,
}

impl Outcome {
    pub(crate) fn of(error: &Error) -> Self {
        if error.is_retryable() {
            Outcome::Failure
        } else {
            Outcome::Neutral
        }
    }
}

/// One worker's breaker, shared by the clones of its [`CircuitBreaker`](super::CircuitBreaker).
#[derive(Debug)]
pub(crate) struct Breaker {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid whatever a panicking holder left in it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> CircuitState {
        match &*self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < *until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Admit a request now, as a probe when half-open; `None` refuses it.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut state = self.lock();
        let probe = match &mut *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() < *until => return None,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return None,
        };
        Some(Ticket {
            breaker: Arc::clone(self),
            probe,
            decided: false,
        })
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + self.config.cool_down,
        };
        *state = match (&*state, outcome) {
            (State::Closed { .. }, Outcome::Success) => State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Failure) => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    State::Closed { failures }
                }
            }
            (State::HalfOpen { .. }, Outcome::Success) if probe => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Outcome::Failure) if probe => open,
            (State::HalfOpen { .. }, Outcome::Neutral) if probe => {
                State::HalfOpen { probing: false }
            }
            // Late outcomes of requests admitted before the breaker opened change nothing.
            _ => return,
        };
    }
}

/// An admitted request's claim on its breaker; records [`Outcome::Neutral`] if dropped before
/// an outcome is known, so a cancelled probe frees the half-open slot.
#[derive(Debug)]
pub(crate) struct Ticket {
    breaker: Arc<Breaker>,
    probe: bool,
    decided: bool,
}

impl Ticket {
    pub(crate) fn decide(&mut self, outcome: Outcome) {
        if !self.decided {
            self.decided = true;
            self.breaker.record(self.probe, outcome);
        } else if outcome == Outcome::Failure {
            // A failure mid-stream still counts, as an ordinary request's.
            self.breaker.record(false, outcome);
        }
    }

    /// `stream`, watched: its first item (or its end) decides the outcome.
    pub(crate) fn watch(self, stream: TokenStream) -> TokenStream {
        // The inner stream cancels its own work when dropped with the watcher.
        TokenStream::new(
            Watched {
                inner: stream,
                ticket: self,
            },
            tokio_util::sync::CancellationToken::new(),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.decided {
            self.breaker.record(self.probe, Outcome::Neutral);
        }
    }
}

struct Watched {
    inner: TokenStream,
    ticket: Ticket,
}

impl Stream for Watched {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = ready!(self.inner.poll_next_unpin(cx));
        let outcome = match &item {
            Some(Ok(_)) | None => Outcome::Success,
            Some(Err(error)) => Outcome::of(error),
        };
        if !self.ticket.decided || outcome == Outcome::Failure {
            self.ticket.decide(outcome);
        }
        Poll::Ready(item)
    }
}
