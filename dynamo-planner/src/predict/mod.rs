//! Load predictors: from the figures of past intervals to the next one's.
//!
//! Each [`Predictor`] learns one series (arrivals per second, mean prompt length, mean output
//! length) one interval at a time and forecasts the next interval. [`PredictorKind`] names them
//! so a command line or a settings file can pick one.
//!
//! | kind | model | good for |
//! |---|---|---|
//! | [`Constant`] | the last value | a steady load; the baseline |
//! | [`MovingAverage`] | the mean of the last `window` values | noisy, level load |
//! | [`KalmanTrend`] | local linear trend (level and slope), Kalman-filtered | ramps up and down |
//! | [`HoltWinters`] | additive level, trend and season | daily or hourly cycles |

mod holt_winters;
mod kalman;
mod kind;
mod moving_average;

pub use holt_winters::{HoltWinters, HoltWintersSettings};
pub use kalman::{KalmanSettings, KalmanTrend};
pub use kind::PredictorKind;
pub use moving_average::MovingAverage;

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
        if value.is_finite() {
            self.last = value;
        }
    }

    fn predict(&self) -> f64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_repeats_the_last_value_and_ignores_nan() {
        let mut p = Constant::default();
        assert_eq!(p.predict(), 0.0);
        p.observe(3.0);
        p.observe(7.0);
        p.observe(f64::NAN);
        assert_eq!(p.predict(), 7.0);
    }
}
