//! The mean of the last few values.

use std::collections::VecDeque;

use super::Predictor;

/// The next value is the mean of the last `window` values (of fewer, until `window` were seen).
#[derive(Debug, Clone)]
pub struct MovingAverage {
    window: usize,
    values: VecDeque<f64>,
    sum: f64,
}

impl MovingAverage {
    /// The mean of the last `window` values; a window of 0 counts as 1.
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        MovingAverage {
            window,
            values: VecDeque::with_capacity(window),
            sum: 0.0,
        }
    }

    /// How many values it averages.
    pub fn window(&self) -> usize {
        self.window
    }
}

impl Default for MovingAverage {
    /// A window of 5 values.
    fn default() -> Self {
        MovingAverage::new(5)
    }
}

impl Predictor for MovingAverage {
    fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values.len() == self.window
            && let Some(oldest) = self.values.pop_front()
        {
            self.sum -= oldest;
        }
        self.values.push_back(value);
        // A running sum drifts by rounding; recompute it once per window.
        if self.values.len() == self.window {
            self.sum = self.values.iter().sum();
        } else {
            self.sum += value;
        }
    }

    fn predict(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.sum / self.values.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_last_window_values() {
        let mut p = MovingAverage::new(3);
        assert_eq!(p.predict(), 0.0);
        p.observe(3.0);
        assert_eq!(p.predict(), 3.0);
        p.observe(6.0);
        assert_eq!(p.predict(), 4.5);
        for v in [10.0, 20.0, 30.0] {
            p.observe(v);
        }
        assert_eq!(p.predict(), 20.0);
    }

    #[test]
    fn a_zero_window_counts_as_one() {
        let mut p = MovingAverage::new(0);
        p.observe(1.0);
        p.observe(2.0);
        assert_eq!(p.window(), 1);
        assert_eq!(p.predict(), 2.0);
    }
}
