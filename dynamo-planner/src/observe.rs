//! What the planner sees of one interval.

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

/// The load of one interval, as the gateway's and the workers' metrics report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The interval's length, in seconds.
    pub interval_s: f64,
    /// Requests that arrived in the interval.
    pub requests: u64,
    /// Their mean prompt length, in tokens (0 without requests).
    pub mean_input_tokens: f64,
    /// Their mean output length, in tokens (0 without requests).
    pub mean_output_tokens: f64,
    /// Prompt tokens found in a cache over all prompt tokens, of the requests admitted in the
    /// interval.
    pub kv_hit_rate: f64,
    /// Mean time to first token of the requests whose first token came in the interval.
    pub mean_ttft_ms: Option<f64>,
    /// Mean time between output tokens of the requests that finished in the interval.
    pub mean_itl_ms: Option<f64>,
    /// Each routed worker at the end of the interval.
    pub workers: Vec<WorkerLoad>,
}

impl Observation {
    /// Arrivals per second over the interval (0 for an interval that is not positive).
    pub fn requests_per_s(&self) -> f64 {
        if self.interval_s > 0.0 && self.interval_s.is_finite() {
            self.requests as f64 / self.interval_s
        } else {
            0.0
        }
    }
}

/// One worker's load at the end of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLoad {
    /// Its pool.
    pub role: WorkerRole,
    /// Requests waiting to be scheduled.
    pub waiting: u64,
    /// Requests running.
    pub running: u64,
    /// The fraction of its KV blocks in use, in `0..=1`.
    pub kv_usage: f64,
}
