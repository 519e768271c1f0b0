//! What the planner sees of one interval.

use dynamo_core::WorkerRole;
use dynamo_core::layers::TrafficReport;
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
    /// Whether some of the interval's traffic went unheard while the workers held requests
    /// (a frontend cut off from the planner): the traffic figures above then count only part
    /// of it, and a policy that plans from them acts on the workers' load alone
    /// ([`Policy::plan_unheard`](crate::policy::Policy::plan_unheard)).
    #[serde(default)]
    pub traffic_unheard: bool,
}

impl Observation {
    /// The interval's traffic from the sum of the frontends' reports (what their
    /// [`TrafficLayer`](dynamo_core::layers::TrafficLayer)s counted): arrivals and their mean
    /// prompt length; the mean output length and the cache hit rate of the requests that ended;
    /// the mean time to first token of the first tokens that came; the mean time between
    /// tokens of the requests that ended with two tokens or more.
    ///
    /// ```
    /// use dynamo_core::layers::TrafficReport;
    /// use dynamo_planner::Observation;
    ///
    /// let traffic = TrafficReport {
    ///     requests: 10, prompt_tokens: 20_000,
    ///     finished: 8, finished_prompt_tokens: 16_000, cached_tokens: 4_000, output_tokens: 1_600,
    ///     first_tokens: 10, ttft_ms_total: 2_500.0, itl_requests: 8, itl_ms_total: 160.0,
    /// };
    /// let observed = Observation { interval_s: 5.0, ..Observation::default() }.with_traffic(&traffic);
    /// assert_eq!(observed.requests_per_s(), 2.0);
    /// assert_eq!((observed.mean_input_tokens, observed.mean_output_tokens), (2000.0, 200.0));
    /// assert_eq!(observed.kv_hit_rate, 0.25);
    /// assert_eq!((observed.mean_ttft_ms, observed.mean_itl_ms), (Some(250.0), Some(20.0)));
    /// ```
    pub fn with_traffic(mut self, traffic: &TrafficReport) -> Self {
        // Reports come from the network: a mean that is not a finite, non-negative number is
        // left out.
        let mean = |total: f64, count: u64| {
            Some(total / count as f64).filter(|mean| count > 0 && mean.is_finite() && *mean >= 0.0)
        };
        self.requests = traffic.requests;
        self.mean_input_tokens =
            mean(traffic.prompt_tokens as f64, traffic.requests).unwrap_or(0.0);
        self.mean_output_tokens =
            mean(traffic.output_tokens as f64, traffic.finished).unwrap_or(0.0);
        self.kv_hit_rate = mean(traffic.cached_tokens as f64, traffic.finished_prompt_tokens)
            .map_or(0.0, |rate| rate.min(1.0));
        self.mean_ttft_ms = mean(traffic.ttft_ms_total, traffic.first_tokens);
        self.mean_itl_ms = mean(traffic.itl_ms_total, traffic.itl_requests);
        self
    }

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
