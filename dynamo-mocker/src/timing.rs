//! How long one engine step takes.

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
