//! Load predictors: from the figures of past intervals to the next one's.

/// Forecasts the next value of a series from the values seen so far.
pub trait Predictor: Send {
    /// Learn the latest value.
    fn observe(&mut self, value: f64);

    /// The next value (0 before any was observed).
    fn predict(&self) -> f64;
}

/// The next value is the last one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Constant {
    last: f64,
}

impl Predictor for Constant {
    fn observe(&mut self, value: f64) {
        self.last = value;
    }

    fn predict(&self) -> f64 {
        self.last
    }
}
