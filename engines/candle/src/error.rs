//! Errors of model loading and of the forward pass.

/// Why the engine could not load a model or run it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CandleError {
    /// The model file could not be read.
    #[error("reading the model: {0}")]
    Io(#[from] std::io::Error),
    /// candle refused an operation (a missing tensor, a shape mismatch, a device error).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The model is not one this engine can run.
    #[error("unsupported model: {0}")]
    Model(String),
}

impl From<CandleError> for dynamo_core::Error {
    fn from(error: CandleError) -> Self {
        dynamo_core::Error::internal(error.to_string())
    }
}
