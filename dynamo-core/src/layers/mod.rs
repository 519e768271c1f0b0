//! Layers for any [`Engine`](crate::Engine): retries with a budget, per-request deadlines and a
//! circuit breaker per worker for resilience, and a traffic meter for a planner.
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
//!   failures in a row (or, optionally, a share of its latest outcomes), refusing at once with
//!   `unavailable`, and let one probe through after a cool-down.
//! - [`DeadlineLayer`]: end a request that runs past its
//!   [`timeout`](crate::GenerateRequest::timeout) with a `timeout` error, and cancel its work,
//!   there and on the worker.
//! - [`TrafficLayer`]: count the requests that pass (arrivals, prompt and output tokens, cache
//!   hits, time to first token and between tokens) into a [`Traffic`], which a frontend reports
//!   to the planner once per interval as a [`TrafficReport`].
//!
//! From the outside in: the deadline (it covers every attempt), then retries, then (per
//! worker, below a router, or directly on a single worker's engine) the circuit breaker:
//!
//! ```
//! use std::time::Duration;
//! use dynamo_core::layers::{CircuitBreakerConfig, CircuitBreakerLayer, DeadlineLayer};
//! use dynamo_core::layers::{RetryConfig, RetryLayer};
//! use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dynamo_core::Error> {
//! let mut engine = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new().default_timeout(Duration::from_secs(120)))
//!     .layer(RetryLayer::new(RetryConfig::default().max_attempts(3).budget(0.2, 10)))
//!     .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()))
//!     .service(EchoEngine::new())
//!     .boxed_engine();
//! let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3])
//!     .with_max_tokens(2)
//!     .with_timeout(Duration::from_secs(10));
//! assert_eq!(engine.generate_all(request).await?.tokens, [1, 2]);
//! # Ok(())
//! # }
//! ```
//!
//! In front of a `dynamo_router::RouterService`, put the deadline and the retries above the
//! router and a breaker on each worker's engine as it joins (`RouterBuilder::circuit_breaker`
//! does it, naming each breaker after its worker); the router's own health checks eject a
//! worker whose attempts fail and bring it back with canaries, and the breaker adds an
//! immediate refusal that costs the worker nothing while it is open. The design is in
//! `docs/reliability.md`.
//!
//! Metrics (through the `metrics` facade, for whatever recorder the process installs):
//! `dynamo_retries_total{outcome}` (`retried`, or `no_budget` when the budget stopped one),
//! `dynamo_circuit_breaker_transitions_total{to}` (`open`, `half_open`, `closed`) and
//! `dynamo_circuit_breaker_refused_total`. A breaker's changes are also logged through
//! `tracing`, with its name when it has one ([`CircuitBreaker::named`]).

mod breaker;
mod breaker_state;
mod deadline;
mod first_chunk;
mod policy;
mod retry;
mod traffic;

pub use breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitState, FailureRate,
};
pub use deadline::{Deadline, DeadlineLayer};
pub use policy::is_retried;
pub use retry::{ResponseFuture as RetryFuture, Retry, RetryConfig, RetryLayer};
pub use traffic::{Traffic, TrafficLayer, TrafficMeter, TrafficReport};
