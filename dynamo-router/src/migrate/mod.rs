//! Request migration: a request whose worker fails mid-stream continues on another worker.
//!
//! [`Migrate`] wraps any [`Engine`](dynamo_core::Engine), usually a
//! [`RouterService`](crate::RouterService). When an attempt fails in a way another worker may
//! not (see [`is_migratable`]), the service drops the failed attempt's stream (which cancels the
//! work there) and sends the request again through the wrapped engine, with the tokens already
//! streamed appended to the prompt and the output limits reduced by as many. The router picks a
//! worker again; a worker whose connection was lost has left its set by then, because discovery
//! removes it. The client sees one stream: no token twice, none missing, and on the last chunk
//! the usage of one request (the prompt as sent, every generated token).
//!
//! A request migrates at most [`MigrationConfig::limit`] times; one more failure ends its stream
//! with an [`Error::Unavailable`] whose source is a
//! [`MigrationExhausted`] saying how many attempts were made. An error that is not migratable
//! (an invalid request, a cancellation, an overload) reaches the client unchanged.
//!
//! Metrics: `dynamo_router_migrations_total{outcome}`, with `migrated` each time a request
//! continues on a new attempt and `exhausted` when a request runs out of migrations.
//!
//! ```
//! use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest, WorkerId};
//! use dynamo_router::RouterService;
//! use dynamo_router::migrate::{MigrateLayer, MigrationConfig};
//! use tower::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = RouterService::builder(BlockSize::new(4)?).build();
//! router.insert_worker(WorkerId::new(1), EchoEngine::new());
//! router.insert_worker(WorkerId::new(2), EchoEngine::new());
//! let mut engine = MigrateLayer::new(MigrationConfig::default().limit(2)).layer(router);
//! let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3, 4, 5]).with_max_tokens(3);
//! assert_eq!(engine.generate_all(request).await?.tokens, [1, 2, 3]);
//! # Ok(())
//! # }
//! ```

pub(crate) mod continuation;
mod layer;
mod service;

use std::time::Duration;

use dynamo_core::{Error, ErrorClass};

pub use layer::MigrateLayer;
pub use service::Migrate;

/// How requests migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationConfig {
    /// How many times one request may continue on a new attempt; 0 turns migration off.
    pub limit: u32,
    /// The pause before an attempt that follows one refused before it streamed anything,
    /// multiplied by the refusals in a row: time for discovery to remove a worker whose
    /// connection was lost (an attempt after a failure mid-stream starts at once).
    pub backoff: Duration,
}

impl Default for MigrationConfig {
    /// Three migrations per request, 25 ms of backoff.
    fn default() -> Self {
        MigrationConfig {
            limit: 3,
            backoff: Duration::from_millis(25),
        }
    }
}

impl MigrationConfig {
    /// Let a request migrate at most `limit` times.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// Why a request ended after migrating as often as it may: the source of the
/// [`Error::Unavailable`] its stream ends with.
///
/// ```
/// use dynamo_core::Error;
/// use dynamo_router::migrate::MigrationExhausted;
///
/// fn attempts(error: &Error) -> Option<u32> {
///     MigrationExhausted::of(error).map(|exhausted| exhausted.attempts)
/// }
/// assert_eq!(attempts(&Error::unavailable("down")), None);
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the request failed on {attempts} attempts (at most {limit} migrations): {last}")]
pub struct MigrationExhausted {
    /// How many attempts were made, the first one included.
    pub attempts: u32,
    /// The migration limit.
    pub limit: u32,
    /// The last attempt's failure.
    #[source]
    pub last: Error,
}

impl MigrationExhausted {
    /// The [`MigrationExhausted`] behind `error`, if it ended a request that ran out of
    /// migrations.
    pub fn of(error: &Error) -> Option<&MigrationExhausted> {
        std::error::Error::source(error)?.downcast_ref()
    }

    /// This as the error a stream ends with.
    pub(crate) fn into_error(self) -> Error {
        Error::unavailable(format!(
            "the request failed on {} attempts, the last with: {}",
            self.attempts, self.last
        ))
        .with_source(self)
    }
}

/// Whether a request that failed with `error` may continue on another worker: the worker or
/// its connection is unavailable. Invalid requests, cancellations, overloads (the router would
/// refuse again), timeouts (the deadline has passed) and internal errors end the request.
pub fn is_migratable(error: &Error) -> bool {
    error.class() == ErrorClass::Unavailable
}
