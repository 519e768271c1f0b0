//! How long one engine step takes.

use crate::Error;

/// What a step did, as far as its duration is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepShape {
    /// Prompt tokens computed in the step (cache hits excluded).
    pub prefill_tokens: u64,
    /// Sequences that produced a decode token in the step.
    pub decode_sequences: u32,
    /// The tokens of the decoding sequences as a fraction of the cache's token capacity, in
    /// `[0, 1]`.
    pub kv_usage: f64,
}

/// The duration of a step, in milliseconds.
pub trait StepTiming: std::fmt::Debug + Send + Sync {
    /// The duration of a step of this shape, in ms.
    fn step_ms(&self, step: &StepShape) -> f64;
}

/// The public timing model of NVIDIA Dynamo's simulated vLLM worker.
///
/// A step costs its prefill part plus its decode part, in ms:
///
/// - prefill, when the step computes `N > 0` prompt tokens: `a·N² + b·N + c`;
/// - decode, when the step decodes any sequence: `d2·u² + d1·u + d0`, at least
///   `min_decode_ms`, with `u` the decoding sequences' tokens over the cache's token capacity.
///
/// ```
/// use dynamo_mocker::{PolynomialTiming, StepShape, StepTiming};
///
/// let timing = PolynomialTiming::default();
/// let prefill_only = StepShape { prefill_tokens: 1000, decode_sequences: 0, kv_usage: 0.0 };
/// let expected = 4.209989e-7 * 1e6 + 1.518344e-2 * 1000.0 + 16.50142;
/// assert!((timing.step_ms(&prefill_only) - expected).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialTiming {
    /// Prefill: ms per token².
    pub prefill_a: f64,
    /// Prefill: ms per token.
    pub prefill_b: f64,
    /// Prefill: ms per step.
    pub prefill_c: f64,
    /// Decode: ms per usage².
    pub decode_u2: f64,
    /// Decode: ms per usage.
    pub decode_u1: f64,
    /// Decode: ms per step.
    pub decode_u0: f64,
    /// The least a decoding step takes, ms.
    pub min_decode_ms: f64,
}

impl Default for PolynomialTiming {
    fn default() -> Self {
        PolynomialTiming {
            prefill_a: 4.209989e-7,
            prefill_b: 1.518344e-2,
            prefill_c: 16.50142,
            decode_u2: -25.74,
            decode_u1: 54.01,
            decode_u0: 5.74,
            min_decode_ms: 1.0,
        }
    }
}

impl StepTiming for PolynomialTiming {
    fn step_ms(&self, step: &StepShape) -> f64 {
        let mut ms = 0.0;
        if step.prefill_tokens > 0 {
            let n = step.prefill_tokens as f64;
            ms += self.prefill_a * n * n + self.prefill_b * n + self.prefill_c;
        }
        if step.decode_sequences > 0 {
            let u = step.kv_usage.clamp(0.0, 1.0);
            let decode = self.decode_u2 * u * u + self.decode_u1 * u + self.decode_u0;
            ms += decode.max(self.min_decode_ms);
        }
        ms
    }
}

/// One of the crate's step-time models, as a value (for configurations).
#[derive(Debug, Clone, PartialEq)]
pub enum TimingModel {
    /// The public polynomial model.
    Polynomial(PolynomialTiming),
    /// A model interpolated from a profiling table.
    Interpolated(InterpolatedTiming),
}

impl Default for TimingModel {
    fn default() -> Self {
        TimingModel::Polynomial(PolynomialTiming::default())
    }
}

impl StepTiming for TimingModel {
    fn step_ms(&self, step: &StepShape) -> f64 {
        match self {
            TimingModel::Polynomial(model) => model.step_ms(step),
            TimingModel::Interpolated(model) => model.step_ms(step),
        }
    }
}

/// A step-time model interpolated from a profiling table, for engines measured rather than
/// modelled.
///
/// Prefill time is interpolated linearly in the prompt tokens of the step, decode time in the
/// KV usage; beyond the table the nearest segment's slope carries on (and time never goes below
/// zero). A table with one point is constant.
///
/// ```
/// use dynamo_mocker::{InterpolatedTiming, StepShape, StepTiming};
///
/// let timing = InterpolatedTiming::new(
///     vec![(1024.0, 20.0), (4096.0, 60.0)], // (prompt tokens, ms)
///     vec![(0.0, 6.0), (1.0, 30.0)],         // (KV usage, ms)
/// )?;
/// let step = StepShape { prefill_tokens: 2560, decode_sequences: 8, kv_usage: 0.5 };
/// assert!((timing.step_ms(&step) - (40.0 + 18.0)).abs() < 1e-9);
/// # Ok::<(), dynamo_mocker::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct InterpolatedTiming {
    prefill: Vec<(f64, f64)>,
    decode: Vec<(f64, f64)>,
}

impl InterpolatedTiming {
    /// A model from `(prompt tokens, ms)` and `(KV usage, ms)` points, in any order.
    ///
    /// # Errors
    ///
    /// [`Error::TimingTable`] for an empty table, a non-finite value or a repeated input.
    pub fn new(prefill: Vec<(f64, f64)>, decode: Vec<(f64, f64)>) -> Result<Self, Error> {
        Ok(InterpolatedTiming {
            prefill: sorted_table(prefill, "prefill")?,
            decode: sorted_table(decode, "decode")?,
        })
    }
}

fn sorted_table(
    mut points: Vec<(f64, f64)>,
    table: &'static str,
) -> Result<Vec<(f64, f64)>, Error> {
    let finite = points.iter().all(|(x, y)| x.is_finite() && y.is_finite());
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let distinct = points.windows(2).all(|w| w[0].0 < w[1].0);
    if points.is_empty() || !finite || !distinct {
        return Err(Error::TimingTable { table });
    }
    Ok(points)
}

/// Piecewise-linear interpolation over sorted points, extrapolating the end segments.
fn interpolate(points: &[(f64, f64)], x: f64) -> f64 {
    let segment = match points {
        [] => return 0.0,
        [(_, y)] => return *y,
        _ => {
            let i = points
                .partition_point(|p| p.0 <= x)
                .clamp(1, points.len() - 1);
            (points[i - 1], points[i])
        }
    };
    let ((x0, y0), (x1, y1)) = segment;
    (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).max(0.0)
}

impl StepTiming for InterpolatedTiming {
    fn step_ms(&self, step: &StepShape) -> f64 {
        let mut ms = 0.0;
        if step.prefill_tokens > 0 {
            ms += interpolate(&self.prefill, step.prefill_tokens as f64);
        }
        if step.decode_sequences > 0 {
            ms += interpolate(&self.decode, step.kv_usage);
        }
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_extrapolate_their_end_segments_and_reject_bad_points() {
        let points = [(0.0, 1.0), (10.0, 11.0), (20.0, 31.0)];
        assert_eq!(interpolate(&points, 5.0), 6.0);
        assert_eq!(interpolate(&points, 15.0), 21.0);
        assert_eq!(interpolate(&points, 30.0), 51.0);
        assert_eq!(interpolate(&points, -20.0), 0.0, "never below zero");
        assert_eq!(interpolate(&[(3.0, 7.0)], 100.0), 7.0);
        assert!(InterpolatedTiming::new(vec![], vec![(0.0, 1.0)]).is_err());
        assert!(InterpolatedTiming::new(vec![(1.0, 1.0), (1.0, 2.0)], vec![(0.0, 1.0)]).is_err());
        assert!(InterpolatedTiming::new(vec![(1.0, f64::NAN)], vec![(0.0, 1.0)]).is_err());
    }
}
