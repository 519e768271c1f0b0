//! The circuit breaker's state machine, and the ticket each admitted request carries until its
//! outcome is known.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::Error;
use crate::response::TokenChunk;
use crate::stream::TokenStream;

use super::{CircuitBreakerConfig, CircuitState, FailureRate};

#[derive(Debug)]
enum State {
    Closed {
        /// Failures in a row.
        failures: u32,
        /// The latest outcomes, `true` for a failure, when a failure-rate window is set.
        recent: Recent,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

impl State {
    fn closed() -> Self {
        State::Closed {
            failures: 0,
            recent: Recent::default(),
        }
    }
}

/// The latest outcomes of a closed circuit, at most a failure-rate window's.
#[derive(Debug, Default)]
struct Recent {
    outcomes: VecDeque<bool>,
    failures: u32,
}

impl Recent {
    /// Add an outcome (`true` for a failure), keeping the last `window`; whether `failures`
    /// of them failed, once `window` are known.
    fn push(&mut self, failed: bool, rate: FailureRate) -> bool {
        self.outcomes.push_back(failed);
        self.failures += u32::from(failed);
        while self.outcomes.len() > rate.window as usize {
            let oldest = self.outcomes.pop_front().unwrap_or(false);
            self.failures -= u32::from(oldest);
        }
        self.outcomes.len() == rate.window as usize && self.failures >= rate.failures
    }
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
    /// What its log lines call it (`of worker 3`), if anything.
    name: Option<Arc<str>>,
    state: Mutex<State>,
}

/// The counter of breakers' changes of state, labelled `to` (`open`, `half_open`, `closed`).
const TRANSITIONS: &str = "dynamo_circuit_breaker_transitions_total";

/// The counter of requests an open breaker refused.
pub(crate) const REFUSED: &str = "dynamo_circuit_breaker_refused_total";

impl Breaker {
    pub(crate) fn new(config: CircuitBreakerConfig, name: Option<Arc<str>>) -> Self {
        Breaker {
            config,
            name,
            state: Mutex::new(State::closed()),
        }
    }

    /// ` of NAME`, or nothing for an unnamed breaker, for log lines.
    fn of(&self) -> String {
        self.name
            .as_deref()
            .map_or_else(String::new, |name| format!(" of {name}"))
    }

    /// A change of state: counted, and logged at `warn` when it opens, `info` otherwise.
    fn moved(&self, to: CircuitState, why: &str) {
        let label = match to {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        };
        metrics::counter!(TRANSITIONS, "to" => label).increment(1);
        match to {
            CircuitState::Open => tracing::warn!(
                "circuit breaker{} opened: {why}; it refuses requests for {:?}",
                self.of(),
                self.config.cool_down
            ),
            _ => tracing::info!("circuit breaker{} {why}", self.of()),
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
            State::Open { .. } => {
                *state = State::HalfOpen { probing: true };
                drop(state);
                self.moved(CircuitState::HalfOpen, "lets a probe through");
                true
            }
            State::HalfOpen { probing: false } => {
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
        let (next, moved) = match (&mut *state, outcome) {
            (State::Closed { failures, recent }, Outcome::Success | Outcome::Failure) => {
                let failed = outcome == Outcome::Failure;
                *failures = if failed {
                    failures.saturating_add(1)
                } else {
                    0
                };
                // The outcome joins the window; the window, if its failures are now too many.
                let too_many = match self.config.failure_rate {
                    Some(rate) => recent.push(failed, rate).then_some(rate),
                    None => None,
                };
                if *failures >= self.config.failure_threshold {
                    let why = format!("{failures} failures in a row");
                    (open, Some((CircuitState::Open, why)))
                } else if let Some(rate) = too_many {
                    let why = format!(
                        "{} of the last {} outcomes failed",
                        recent.failures, rate.window
                    );
                    (open, Some((CircuitState::Open, why)))
                } else {
                    return;
                }
            }
            (State::HalfOpen { .. }, Outcome::Success) if probe => {
                let why = "closed: its probe was answered".to_owned();
                (State::closed(), Some((CircuitState::Closed, why)))
            }
            (State::HalfOpen { .. }, Outcome::Failure) if probe => (
                open,
                Some((CircuitState::Open, "its probe failed".to_owned())),
            ),
            (State::HalfOpen { .. }, Outcome::Neutral) if probe => {
                (State::HalfOpen { probing: false }, None)
            }
            // Late outcomes of requests admitted before the breaker opened change nothing.
            _ => return,
        };
        *state = next;
        drop(state);
        if let Some((to, why)) = moved {
            self.moved(to, &why);
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// The step at which a closed circuit opens, by the definition itself: `threshold`
    /// failures in a row, or `rate.failures` failures among the last `rate.window` outcomes,
    /// neutral outcomes not counted.
    fn opens_at(outcomes: &[Outcome], threshold: u32, rate: FailureRate) -> Option<usize> {
        let mut counted: Vec<bool> = Vec::new();
        for (step, outcome) in outcomes.iter().enumerate() {
            if *outcome == Outcome::Neutral {
                continue;
            }
            counted.push(*outcome == Outcome::Failure);
            let in_a_row = counted.iter().rev().take_while(|failed| **failed).count();
            let last = &counted[counted.len().saturating_sub(rate.window as usize)..];
            let failed = last.iter().filter(|failed| **failed).count();
            let full = last.len() == rate.window as usize;
            if in_a_row >= threshold as usize || (full && failed >= rate.failures as usize) {
                return Some(step);
            }
        }
        None
    }

    proptest! {
        /// A closed breaker opens exactly where the definition says, whatever the mix.
        #[test]
        fn a_closed_circuit_opens_where_the_definition_says(
            outcomes in proptest::collection::vec(
                prop_oneof![Just(Outcome::Success), Just(Outcome::Failure), Just(Outcome::Neutral)],
                0..60,
            ),
            threshold in 1u32..8,
            window in 1u32..12,
            share in 0.0f64..=1.0,
        ) {
            let failures = ((share * f64::from(window)).ceil() as u32).clamp(1, window);
            let config = CircuitBreakerConfig::default()
                .failure_threshold(threshold)
                .failure_rate(failures, window)
                .cool_down(Duration::from_secs(3600));
            let breaker = Arc::new(Breaker::new(config, None));
            let expected = opens_at(&outcomes, threshold, FailureRate { failures, window });
            for (step, outcome) in outcomes.iter().enumerate() {
                let Some(mut ticket) = breaker.admit() else {
                    return Err(TestCaseError::fail(format!("refused at {step}")));
                };
                ticket.decide(*outcome);
                let open = breaker.state() == CircuitState::Open;
                prop_assert_eq!(open, expected == Some(step), "step {}", step);
                if open {
                    break;
                }
            }
        }
    }
}
