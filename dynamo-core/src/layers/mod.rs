//! Resilience layers for any [`Engine`](crate::Engine): retries with a budget, per-request
//! deadlines and a circuit breaker per worker.
//!
//! They live in `dynamo-core`, beside the [`Engine`](crate::Engine) abstraction, so that any
//! engine can use them (a local model, a remote worker's client, a router) without depending on
//! the router. Each is a tower [`Layer`](tower::Layer) and keeps the engine's shape (request in,
//! [`TokenStream`](crate::TokenStream) out, [`Error`](crate::Error) as error), so they stack
//! with `ServiceBuilder` and with each other:
//!
//! - [`RetryLayer`]: send a request again when it fails *before its first token* with an
//!   overloaded or unavailable error, a few times at most and within a budget shared by every
//!   request (a share of recent requests plus a floor), so a failing fleet sees no retry storm.
//!   Failures after the first token are request migration's business (`dynamo-router`).
//! - [`CircuitBreakerLayer`]: around one worker's engine, stop sending it requests after a few
//!   failures in a row, refusing at once with `unavailable`, and let one probe through after a
//!   cool-down.
//! - [`DeadlineLayer`]: end a request that runs past its
//!   [`timeout`](crate::GenerateRequest::timeout) with a `timeout` error, and cancel its work,
//!   there and on the worker.
//!
//! The design and the order to stack them in are in `docs/reliability.md`.

mod breaker;
mod breaker_state;
mod deadline;
mod first_chunk;
mod policy;
mod retry;

pub use breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
pub use deadline::{Deadline, DeadlineLayer};
pub use policy::is_retried;
pub use retry::{ResponseFuture as RetryFuture, Retry, RetryConfig, RetryLayer};
