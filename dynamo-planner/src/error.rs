//! The planner's errors.

/// What can go wrong while planning or scaling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A performance profile that cannot be used.
    #[error("invalid performance profile: {reason}")]
    Profile {
        /// Why.
        reason: String,
    },
    /// A setting out of its range.
    #[error("invalid planner setting `{setting}`: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The scaler could not read or change a pool.
    #[error("cannot scale the {pool} pool: {message}")]
    Scale {
        /// The pool.
        pool: dynamo_core::WorkerRole,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}
