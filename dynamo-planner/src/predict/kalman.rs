//! A local-linear-trend Kalman filter.

use serde::{Deserialize, Serialize};

use super::Predictor;

/// A local-linear-trend model, Kalman-filtered: the series is a level that moves by a slope
/// each interval, both drifting at random, seen through measurement noise.
///
/// ```text
/// level[t+1] = level[t] + slope[t] + w_level     w_level ~ N(0, level_noise)
/// slope[t+1] = slope[t]            + w_slope     w_slope ~ N(0, slope_noise)
/// value[t]   = level[t]            + v           v       ~ N(0, measurement_noise)
/// ```
///
/// The forecast is `level + slope`: on a ramp it converges to the ramp's next value, on a
/// level series to the level. Only the ratios of the noise settings matter (the estimates do
/// not depend on the series' scale): more process noise follows changes faster, more
/// measurement noise smooths more.
#[derive(Debug, Clone)]
pub struct KalmanTrend {
    settings: KalmanSettings,
    state: Option<State>,
}

/// The noise variances of a [`KalmanTrend`], relative to one another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KalmanSettings {
    /// How much the level drifts each interval. Default 0.1.
    pub level_noise: f64,
    /// How much the slope drifts each interval. Default 0.01.
    pub slope_noise: f64,
    /// How noisy each value is. Default 1.
    pub measurement_noise: f64,
}

impl Default for KalmanSettings {
    fn default() -> Self {
        KalmanSettings {
            level_noise: 0.1,
            slope_noise: 0.01,
            measurement_noise: 1.0,
        }
    }
}

/// The estimate and its covariance `[[p00, p01], [p01, p11]]`.
#[derive(Debug, Clone, Copy)]
struct State {
    level: f64,
    slope: f64,
    p00: f64,
    p01: f64,
    p11: f64,
}

/// The slope's variance before a second value was seen: unknown, so large.
const UNKNOWN_SLOPE_VARIANCE: f64 = 1e6;

impl KalmanTrend {
    /// A filter with these noise settings; a setting that is not positive and finite takes
    /// its default.
    pub fn new(settings: KalmanSettings) -> Self {
        let fallback = KalmanSettings::default();
        let pick = |v: f64, d: f64| if v.is_finite() && v > 0.0 { v } else { d };
        KalmanTrend {
            settings: KalmanSettings {
                level_noise: pick(settings.level_noise, fallback.level_noise),
                slope_noise: pick(settings.slope_noise, fallback.slope_noise),
                measurement_noise: pick(settings.measurement_noise, fallback.measurement_noise),
            },
            state: None,
        }
    }

    /// Its noise settings.
    pub fn settings(&self) -> KalmanSettings {
        self.settings
    }

    /// The current estimate of the slope (0 before two values were seen).
    pub fn slope(&self) -> f64 {
        self.state.map_or(0.0, |s| s.slope)
    }
}

impl Default for KalmanTrend {
    fn default() -> Self {
        KalmanTrend::new(KalmanSettings::default())
    }
}

impl Predictor for KalmanTrend {
    fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let KalmanSettings {
            level_noise,
            slope_noise,
            measurement_noise,
        } = self.settings;
        let Some(s) = self.state else {
            self.state = Some(State {
                level: value,
                slope: 0.0,
                p00: measurement_noise,
                p01: 0.0,
                p11: UNKNOWN_SLOPE_VARIANCE,
            });
            return;
        };
        // Predict: x = F x, P = F P Fᵀ + Q with F = [[1, 1], [0, 1]].
        let level = s.level + s.slope;
        let a00 = s.p00 + 2.0 * s.p01 + s.p11 + level_noise;
        let a01 = s.p01 + s.p11;
        let a11 = s.p11 + slope_noise;
        // Update with the measurement of the level.
        let innovation = value - level;
        let total = a00 + measurement_noise;
        let (k0, k1) = (a00 / total, a01 / total);
        self.state = Some(State {
            level: level + k0 * innovation,
            slope: s.slope + k1 * innovation,
            p00: (1.0 - k0) * a00,
            p01: (1.0 - k0) * a01,
            p11: a11 - k1 * a01,
        });
    }

    fn predict(&self) -> f64 {
        self.state.map_or(0.0, |s| s.level + s.slope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_ramp() {
        let mut p = KalmanTrend::default();
        for t in 0..60 {
            p.observe(10.0 + 2.5 * t as f64);
        }
        // The next value of the ramp is 10 + 2.5 * 60 = 160.
        assert!((p.predict() - 160.0).abs() < 1e-3, "{}", p.predict());
        assert!((p.slope() - 2.5).abs() < 1e-3);
    }

    #[test]
    fn converges_to_a_constant() {
        let mut p = KalmanTrend::default();
        for _ in 0..50 {
            p.observe(42.0);
        }
        assert!((p.predict() - 42.0).abs() < 1e-9);
    }

    #[test]
    fn does_not_depend_on_the_scale() {
        let (mut small, mut large) = (KalmanTrend::default(), KalmanTrend::default());
        for t in 0..20 {
            let v = ((t * 7) % 5) as f64 + t as f64;
            small.observe(v);
            large.observe(v * 1000.0);
        }
        assert!((small.predict() * 1000.0 - large.predict()).abs() < 1e-6);
    }

    #[test]
    fn bad_settings_take_their_defaults() {
        let p = KalmanTrend::new(KalmanSettings {
            level_noise: -1.0,
            slope_noise: f64::NAN,
            measurement_noise: 0.0,
        });
        assert_eq!(p.settings(), KalmanSettings::default());
    }
}
