//! Correction factors: how far what is observed strays from what the profile expects.

/// Observed over expected (TTFT or ITL), smoothed: what the profile misses of queueing,
/// prefix-cache hits, and prefill chunks sharing decode steps.
///
/// NVIDIA Dynamo's planner keeps `prefill_correction = observed TTFT / expected TTFT` and
/// `decode_correction = observed ITL / expected ITL`; this type keeps either, as an
/// exponentially weighted mean of the ratios (`smoothing` 1 keeps only the last one, as
/// Dynamo does). Each ratio is clamped to `0.05..=20` so that one odd interval cannot send
/// the plan to an extreme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction {
    smoothing: f64,
    factor: Option<f64>,
}

impl Correction {
    /// The smallest and largest ratio one interval may contribute.
    pub const RATIO_RANGE: (f64, f64) = (0.05, 20.0);

    /// A factor that weighs each new ratio by `smoothing` (clamped to `0.01..=1`) and the
    /// past by the rest.
    pub fn new(smoothing: f64) -> Self {
        let smoothing = if smoothing.is_nan() {
            1.0
        } else {
            smoothing.clamp(0.01, 1.0)
        };
        Correction {
            smoothing,
            factor: None,
        }
    }

    /// Learn one interval's `observed` and `expected` figures; ignored unless both are
    /// positive and finite.
    pub fn observe(&mut self, observed: f64, expected: f64) {
        let usable = |v: f64| v.is_finite() && v > 0.0;
        if !usable(observed) || !usable(expected) {
            return;
        }
        let (lo, hi) = Self::RATIO_RANGE;
        let ratio = (observed / expected).clamp(lo, hi);
        self.factor = Some(match self.factor {
            Some(old) => self.smoothing * ratio + (1.0 - self.smoothing) * old,
            None => ratio,
        });
    }

    /// The factor: 1 until something was observed.
    pub fn factor(&self) -> f64 {
        self.factor.unwrap_or(1.0)
    }

    /// Whether anything was observed yet.
    pub fn is_known(&self) -> bool {
        self.factor.is_some()
    }
}

impl Default for Correction {
    /// Only the last ratio counts (smoothing 1), as in Dynamo.
    fn default() -> Self {
        Correction::new(1.0)
    }
}
