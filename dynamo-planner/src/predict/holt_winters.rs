//! Additive Holt-Winters: level, trend and a repeating season.
//!
//! Written here rather than taken from a crate: the forecasting crates on crates.io (`arima`,
//! `chronos-ts`, `oxidiviner`, `anofox-forecast`, `backshift`) fit whole series in batch and
//! bring `ndarray`, `chrono`, LAPACK or `anyhow` with them, while the planner needs one-step
//! forecasts updated online from a few dozen values — about sixty lines of arithmetic.

use serde::{Deserialize, Serialize};

use super::Predictor;

/// Additive Holt-Winters (triple exponential smoothing) with a season of `season` intervals:
///
/// ```text
/// level    = α (x - season[i]) + (1 - α) (level + trend)
/// trend    = β (level - previous level) + (1 - β) trend
/// season[i] = γ (x - level) + (1 - γ) season[i]
/// forecast = level + trend + season[i + 1]
/// ```
///
/// The first two seasons' values set the trend (the difference of their means), the level
/// and the seasonal offsets; until they are complete the forecast is the last value. A
/// periodic series on a linear trend is forecast exactly from the third season on.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    settings: HoltWintersSettings,
    /// The first two seasons' values, until they are complete.
    warmup: Vec<f64>,
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// Where in the season the next value falls.
    next: usize,
    last: f64,
}

/// The season length and smoothing factors of a [`HoltWinters`] predictor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HoltWintersSettings {
    /// Intervals per season (for example 24 one-hour intervals in a day). Default 24.
    pub season: usize,
    /// Level smoothing α in `0..=1`. Default 0.5.
    pub alpha: f64,
    /// Trend smoothing β in `0..=1`. Default 0.1.
    pub beta: f64,
    /// Season smoothing γ in `0..=1`. Default 0.3.
    pub gamma: f64,
}

impl Default for HoltWintersSettings {
    fn default() -> Self {
        HoltWintersSettings {
            season: 24,
            alpha: 0.5,
            beta: 0.1,
            gamma: 0.3,
        }
    }
}

impl HoltWinters {
    /// A predictor with these settings; a season of 0 counts as 1, and a smoothing factor
    /// outside `0..=1` takes its default.
    pub fn new(settings: HoltWintersSettings) -> Self {
        let fallback = HoltWintersSettings::default();
        let pick = |v: f64, d: f64| if (0.0..=1.0).contains(&v) { v } else { d };
        let settings = HoltWintersSettings {
            season: settings.season.max(1),
            alpha: pick(settings.alpha, fallback.alpha),
            beta: pick(settings.beta, fallback.beta),
            gamma: pick(settings.gamma, fallback.gamma),
        };
        HoltWinters {
            settings,
            warmup: Vec::with_capacity(2 * settings.season),
            level: 0.0,
            trend: 0.0,
            season: Vec::new(),
            next: 0,
            last: 0.0,
        }
    }

    /// A predictor with a season of `season` intervals and default smoothing.
    pub fn with_season(season: usize) -> Self {
        HoltWinters::new(HoltWintersSettings {
            season,
            ..HoltWintersSettings::default()
        })
    }

    /// Its settings.
    pub fn settings(&self) -> HoltWintersSettings {
        self.settings
    }
}

impl HoltWinters {
    /// Level, trend and season from the first two seasons: the trend is the difference of
    /// their means per interval, each offset the mean distance from the trend line.
    fn start(&mut self) {
        let m = self.settings.season;
        let mf = m as f64;
        let (first, second) = self.warmup.split_at(m);
        let (mean1, mean2) = (
            first.iter().sum::<f64>() / mf,
            second.iter().sum::<f64>() / mf,
        );
        self.trend = (mean2 - mean1) / mf;
        let middle = (mf - 1.0) / 2.0;
        self.level = mean2 + self.trend * middle;
        self.season = (0..m)
            .map(|i| {
                let line = self.trend * (i as f64 - middle);
                ((first[i] - mean1 - line) + (second[i] - mean2 - line)) / 2.0
            })
            .collect();
        self.warmup = Vec::new();
        self.next = 0;
    }
}

impl Default for HoltWinters {
    fn default() -> Self {
        HoltWinters::new(HoltWintersSettings::default())
    }
}

impl Predictor for HoltWinters {
    fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.last = value;
        let m = self.settings.season;
        if self.season.is_empty() {
            self.warmup.push(value);
            if self.warmup.len() == 2 * m {
                self.start();
            }
            return;
        }
        let HoltWintersSettings {
            alpha, beta, gamma, ..
        } = self.settings;
        let i = self.next;
        let previous = self.level;
        self.level = alpha * (value - self.season[i]) + (1.0 - alpha) * (previous + self.trend);
        self.trend = beta * (self.level - previous) + (1.0 - beta) * self.trend;
        self.season[i] = gamma * (value - self.level) + (1.0 - gamma) * self.season[i];
        self.next = (i + 1) % m;
    }

    fn predict(&self) -> f64 {
        match self.season.get(self.next) {
            Some(offset) => self.level + self.trend + offset,
            None => self.last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::MovingAverage;

    fn wave(t: usize) -> f64 {
        50.0 + 10.0 * (2.0 * std::f64::consts::PI * t as f64 / 12.0).sin()
    }

    /// Mean absolute one-step error over `steps` values after a warm-up of `skip`.
    fn error(
        p: &mut dyn Predictor,
        series: impl Fn(usize) -> f64,
        skip: usize,
        steps: usize,
    ) -> f64 {
        let mut total = 0.0;
        for t in 0..skip + steps {
            if t >= skip {
                total += (p.predict() - series(t)).abs();
            }
            p.observe(series(t));
        }
        total / steps as f64
    }

    #[test]
    fn forecasts_a_periodic_series_exactly() {
        let mut p = HoltWinters::with_season(12);
        assert!(error(&mut p, wave, 24, 48) < 1e-9);
    }

    #[test]
    fn beats_a_moving_average_on_a_sine() {
        let hw = error(
            &mut HoltWinters::with_season(12),
            |t| wave(t) + 0.5 * t as f64,
            36,
            60,
        );
        let ma = error(
            &mut MovingAverage::new(3),
            |t| wave(t) + 0.5 * t as f64,
            36,
            60,
        );
        assert!(
            hw < 0.2 * ma,
            "holt-winters {hw} against moving average {ma}"
        );
    }

    #[test]
    fn repeats_the_last_value_during_the_first_season() {
        let mut p = HoltWinters::with_season(4);
        assert_eq!(p.predict(), 0.0);
        p.observe(5.0);
        p.observe(9.0);
        assert_eq!(p.predict(), 9.0);
    }

    #[test]
    fn follows_a_trend_with_a_season() {
        let series = |t: usize| wave(t) + 2.0 * t as f64;
        let mut p = HoltWinters::with_season(12);
        assert!(error(&mut p, series, 24, 48) < 1e-9);
    }
}
