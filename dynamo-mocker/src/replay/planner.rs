//! The planner in the replay: its settings, the SLA a replay is judged by, and the replica
//! timeline it reports.

use dynamo_planner::policy::PoolRule;
use serde::Serialize;

use crate::summary::RequestRecord;

/// How the replay plays a [`Planner`](dynamo_planner::Planner)'s decisions out.
///
/// Every [`interval_s`](dynamo_planner::PlannerConfig::interval_s) of virtual time the replay
/// observes the interval that ended, asks the planner, and applies its decision (unless it is
/// advisory) as a simulated scaler would: a worker asked for joins the router
/// [`startup_ms`](Self::startup_ms) later (model load), costing worker-time from the moment
/// it is asked for; a worker removed stops receiving requests at once and leaves when its
/// requests have finished (graceful drain), costing worker-time until then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannerReplayConfig {
    /// From the moment a worker is asked for to the moment it is routed to, in ms of virtual
    /// time. Default 30,000.
    pub startup_ms: f64,
}

impl Default for PlannerReplayConfig {
    fn default() -> Self {
        PlannerReplayConfig {
            startup_ms: 30_000.0,
        }
    }
}

/// A service-level objective on each request: its time to first token and its mean time
/// between output tokens.
///
/// ```
/// use dynamo_mocker::{RequestRecord, Sla};
///
/// let sla = Sla { ttft_ms: 500.0, itl_ms: 50.0 };
/// let request = RequestRecord {
///     index: 0,
///     worker: 0,
///     arrival_ms: 0.0,
///     first_token_ms: Some(400.0),
///     finish_ms: Some(400.0 + 9.0 * 40.0),
///     input_tokens: 1000,
///     cached_tokens: 0,
///     host_cached_tokens: 0,
///     disk_cached_tokens: 0,
///     output_tokens: 10,
///     prefill_worker: None,
///     prefill_done_ms: None,
///     kv_arrival_ms: None,
/// };
/// assert!(sla.is_met(&request));
/// // A request that never finished misses.
/// let unfinished = RequestRecord { finish_ms: None, ..request.clone() };
/// assert_eq!(sla.attainment(&[request, unfinished]), 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sla {
    /// Most time to first token, in ms.
    pub ttft_ms: f64,
    /// Most mean time between output tokens after the first (time per output token), in ms.
    pub itl_ms: f64,
}

impl Sla {
    /// Whether `record` finished within both targets. A request of one output token has no
    /// inter-token latency and is judged by its time to first token.
    pub fn is_met(&self, record: &RequestRecord) -> bool {
        record.finish_ms.is_some()
            && record.ttft_ms().is_some_and(|ttft| ttft <= self.ttft_ms)
            && record.tpot_ms().is_none_or(|tpot| tpot <= self.itl_ms)
    }

    /// The share of `records` that met the SLA; requests that never finished count as
    /// misses. 0 without records.
    pub fn attainment(&self, records: &[RequestRecord]) -> f64 {
        if records.is_empty() {
            return 0.0;
        }
        let met = records.iter().filter(|r| self.is_met(r)).count();
        met as f64 / records.len() as f64
    }
}

/// The size of the worker pool at a moment of a planner replay: each planning step and each
/// worker that joins adds a point. In a disaggregated replay `ready` and `desired` count the
/// decode pool, and the prefill pool has its own two counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaPoint {
    /// When, in ms of virtual time.
    pub at_ms: f64,
    /// Workers routed to (started, not draining).
    pub ready: usize,
    /// Workers asked for: ready ones and those starting.
    pub desired: usize,
    /// In a disaggregated replay, the prefill workers routed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_ready: Option<usize>,
    /// In a disaggregated replay, the prefill workers asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_desired: Option<usize>,
    /// At a planning step, the planner's reason for its decision (the log line a live
    /// planner writes); `None` at the start and where a worker joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// At a planning step, the rule that set each pool's target
    /// ([`Decision::rules`](dynamo_planner::Decision::rules)); empty elsewhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<PoolRule>,
}
