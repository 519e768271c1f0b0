//! The error vocabulary shared by every dynamo crate.
//!
//! Errors fall into a closed set of [`ErrorClass`]es. Each class has a stable snake_case name
//! ([`ErrorClass::name`]) that may be used as a metric label or shown to a client; the frontend
//! maps classes to HTTP status codes once, and nothing classifies an error by its message text.

use std::time::Duration;

/// A boxed error from a lower layer, kept as the [`std::error::Error::source`] of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of dynamo operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The closed set of error classes.
///
/// The set is deliberately small and stable: it is what metrics, clients and retry policies see.
/// Details belong in the message and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The request is malformed or asks for something the engine cannot do. Do not retry.
    InvalidRequest,
    /// A named thing (model, worker, endpoint, block) does not exist.
    NotFound,
    /// The system is alive but has no capacity for this request now. Retry later.
    Overloaded,
    /// A dependency (worker, connection, service) cannot be reached.
    Unavailable,
    /// The request was cancelled, by its client or by shutdown.
    Cancelled,
    /// The request did not finish within its deadline.
    Timeout,
    /// A bug or an unexpected state inside the system.
    Internal,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::InvalidRequest,
        ErrorClass::NotFound,
        ErrorClass::Overloaded,
        ErrorClass::Unavailable,
        ErrorClass::Cancelled,
        ErrorClass::Timeout,
        ErrorClass::Internal,
    ];

    /// The stable snake_case name of the class, suitable for metric labels and error bodies.
    ///
    /// ```
    /// use dynamo_core::ErrorClass;
    /// assert_eq!(ErrorClass::InvalidRequest.name(), "invalid_request");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Internal => "internal",
        }
    }

    /// Whether a request that failed with this class may succeed if sent again unchanged.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Overloaded | ErrorClass::Unavailable | ErrorClass::Timeout
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of every dynamo operation.
///
/// Each variant belongs to exactly one [`ErrorClass`]; match on [`Error::class`] rather than on
/// variants when deciding what to do, since variants may be added.
///
/// ```
/// use dynamo_core::{Error, ErrorClass};
///
/// let err = Error::invalid_request("max_tokens must be at least 1");
/// assert_eq!(err.class(), ErrorClass::InvalidRequest);
/// assert_eq!(err.to_string(), "invalid request: max_tokens must be at least 1");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or asks for something unsupported.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong, in words fit for the client.
        message: String,
    },
    /// A named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, for example `model "llama"`.
        what: String,
    },
    /// No capacity now.
    #[error("overloaded: {message}")]
    Overloaded {
        /// Which limit was hit.
        message: String,
        /// A hint for how long the client should wait before retrying.
        retry_after: Option<Duration>,
    },
    /// A dependency cannot be reached.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// The lower-level cause, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The request was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The request ran out of time.
    #[error("timed out{}", after.map(|after| format!(" after {after:?}")).unwrap_or_default())]
    Timeout {
        /// The deadline that passed, when known (tower's `Timeout` layer does not say).
        after: Option<Duration>,
    },
    /// An unexpected internal failure.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong, for logs.
        message: String,
        /// The lower-level cause, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidRequest { .. } => ErrorClass::InvalidRequest,
            Error::NotFound { .. } => ErrorClass::NotFound,
            Error::Overloaded { .. } => ErrorClass::Overloaded,
            Error::Unavailable { .. } => ErrorClass::Unavailable,
            Error::Cancelled => ErrorClass::Cancelled,
            Error::Timeout { .. } => ErrorClass::Timeout,
            Error::Internal { .. } => ErrorClass::Internal,
        }
    }

    /// An [`Error::InvalidRequest`] with the given message.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
        }
    }

    /// An [`Error::NotFound`] for the given thing.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// An [`Error::Overloaded`] with no retry hint.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Error::Overloaded {
            message: message.into(),
            retry_after: None,
        }
    }

    /// An [`Error::Unavailable`] with no source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Internal`] with no source.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// Attach a lower-level cause to an [`Error::Unavailable`] or [`Error::Internal`]; other
    /// variants carry no source and are returned unchanged.
    pub fn with_source(mut self, cause: impl Into<BoxError>) -> Self {
        if let Error::Unavailable { source, .. } | Error::Internal { source, .. } = &mut self {
            *source = Some(cause.into());
        }
        self
    }

    /// The error a tower stack over engines returns, as an [`Error`]: an [`Error`] stays
    /// itself, tower's load-shedding refusal becomes [`Error::Overloaded`] (retry after a
    /// second), its timeout [`Error::Timeout`], and anything else [`Error::Internal`] with the
    /// original as its source.
    ///
    /// Layers such as `LoadShed`, `Timeout` and `ConcurrencyLimit` box their errors; map them
    /// back with this so the stack is an [`Engine`](crate::Engine) again:
    ///
    /// ```
    /// use dynamo_core::{EchoEngine, EngineExt, Error, ErrorClass, GenerateRequest};
    /// use tower::ServiceBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut engine = ServiceBuilder::new()
    ///     .map_err(Error::from_boxed)
    ///     .load_shed()
    ///     .timeout(std::time::Duration::from_secs(30))
    ///     .service(EchoEngine::new())
    ///     .boxed_engine();
    /// let error = engine.generate_all(GenerateRequest::new("r1", "m", vec![])).await.unwrap_err();
    /// assert_eq!(error.class(), ErrorClass::InvalidRequest); // the engine's own error, kept
    /// # }
    /// ```
    pub fn from_boxed(error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(error) => return *error,
            Err(other) => other,
        };
        if error.is::<tower::load_shed::error::Overloaded>() {
            return Error::Overloaded {
                message: "the engine has no capacity for another request".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            };
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return Error::Timeout { after: None };
        }
        Error::internal(error.to_string()).with_source(error)
    }

    /// The retry hint of an [`Error::Overloaded`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this error is of class [`ErrorClass::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.class() == ErrorClass::Cancelled
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_stable_and_distinct() {
        let names: Vec<_> = ErrorClass::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "invalid_request",
                "not_found",
                "overloaded",
                "unavailable",
                "cancelled",
                "timeout",
                "internal"
            ]
        );
    }

    #[test]
    fn every_variant_maps_to_its_class() {
        let cases = [
            (Error::invalid_request("x"), ErrorClass::InvalidRequest),
            (Error::not_found("model"), ErrorClass::NotFound),
            (Error::overloaded("queue full"), ErrorClass::Overloaded),
            (Error::unavailable("down"), ErrorClass::Unavailable),
            (Error::Cancelled, ErrorClass::Cancelled),
            (
                Error::Timeout {
                    after: Some(Duration::from_secs(1)),
                },
                ErrorClass::Timeout,
            ),
            (Error::internal("bug"), ErrorClass::Internal),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
        }
    }

    #[test]
    fn sources_are_kept_for_unavailable_and_internal() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::unavailable("worker 3").with_source(io);
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        assert!(err.is_retryable());
        let plain = Error::invalid_request("bad").with_source("ignored");
        assert!(plain.source().is_none());
        assert!(!plain.is_retryable());
    }
}
