//! What a replay measured, per request and in summary.

use serde::Serialize;

use crate::phases::DisaggSummary;
use crate::replay::ReplicaPoint;

/// One request's life in a replay, in ms of virtual time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// The request's position in the trace.
    pub index: usize,
    /// The worker that served it.
    pub worker: u64,
    /// Arrival.
    pub arrival_ms: f64,
    /// First token, if produced.
    pub first_token_ms: Option<f64>,
    /// Last token, if the request finished.
    pub finish_ms: Option<f64>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Prompt tokens found in the worker's cache at admission.
    pub cached_tokens: u64,
    /// The part of `cached_tokens` onboarded from the worker's host tier.
    pub host_cached_tokens: u64,
    /// The part of `cached_tokens` onboarded from the worker's disk tier.
    pub disk_cached_tokens: u64,
    /// Output tokens asked for.
    pub output_tokens: u64,
    /// In a disaggregated replay, the prefill worker that computed the prompt; `None` when
    /// the serving worker computed it itself (aggregated, or local prefill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_worker: Option<u64>,
    /// When the prefill worker finished the prompt (its KV ready to hand over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_done_ms: Option<f64>,
    /// When the prompt's KV reached the decode worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_arrival_ms: Option<f64>,
}

impl RequestRecord {
    /// Time to first token.
    pub fn ttft_ms(&self) -> Option<f64> {
        Some(self.first_token_ms? - self.arrival_ms)
    }

    /// Mean time per output token after the first.
    pub fn tpot_ms(&self) -> Option<f64> {
        let decode = self.finish_ms? - self.first_token_ms?;
        (self.output_tokens > 1).then(|| decode / (self.output_tokens - 1) as f64)
    }

    /// Arrival to last token.
    pub fn e2e_ms(&self) -> Option<f64> {
        Some(self.finish_ms? - self.arrival_ms)
    }
}

/// The summary of one replay; field names follow NVIDIA Dynamo's replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The routing policy.
    pub router: String,
    /// Requests in the trace.
    pub num_requests: usize,
    /// Requests that finished.
    pub completed_requests: usize,
    /// Virtual time from the first arrival to the last finish.
    pub duration_ms: f64,
    /// Real time the replay took.
    pub wall_time_ms: f64,
    /// Prompt tokens found in a cache over all prompt tokens.
    pub prefix_cache_reused_ratio: f64,
    /// The part of `prefix_cache_reused_ratio` onboarded from host tiers (as NVIDIA Dynamo's
    /// `host_reused_ratio`).
    pub host_reused_ratio: f64,
    /// The part of `prefix_cache_reused_ratio` onboarded from disk tiers.
    pub disk_reused_ratio: f64,
    /// Mean time to first token.
    pub mean_ttft_ms: f64,
    /// Median time to first token.
    pub median_ttft_ms: f64,
    /// 90th percentile of the time to first token.
    pub p90_ttft_ms: f64,
    /// 99th percentile of the time to first token.
    pub p99_ttft_ms: f64,
    /// Mean time per output token.
    pub mean_tpot_ms: f64,
    /// 90th percentile of the time per output token.
    pub p90_tpot_ms: f64,
    /// Mean time from arrival to last token.
    pub mean_e2e_latency_ms: f64,
    /// Output tokens per second of virtual time.
    pub output_throughput_tok_s: f64,
    /// Simulated requests per second of real time.
    pub requests_per_wall_s: f64,
    /// Requests preempted, counting each preemption.
    pub preemptions: u64,
    /// In a disaggregated replay: placements and where the time to first token went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disagg: Option<DisaggSummary>,
    /// The share of requests within the replay's [`Sla`](crate::Sla) (unfinished ones
    /// miss), when it was given one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla_attainment: Option<f64>,
    /// Workers alive over the replay, in hours of virtual time: from virtual time 0 (or the
    /// moment a worker was asked for) to the last finish (or the moment a removed worker had
    /// drained), starting and draining workers included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_hours: Option<f64>,
    /// GPUs held over the replay, in hours: each worker's share of
    /// [`worker_hours`](Self::worker_hours) times the GPUs of its role
    /// ([`ReplayConfig::worker_gpus`](crate::ReplayConfig::worker_gpus)). The same as
    /// `worker_hours` where every worker holds one GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_hours: Option<f64>,
    /// In a planner replay, the pool's size over time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaPoint>>,
}

impl Summary {
    /// Summarise `records`.
    pub fn of(
        router: &str,
        records: &[RequestRecord],
        wall_time_ms: f64,
        preemptions: u64,
    ) -> Self {
        let finished: Vec<&RequestRecord> =
            records.iter().filter(|r| r.finish_ms.is_some()).collect();
        let ttft = sorted(records.iter().filter_map(RequestRecord::ttft_ms));
        let tpot = sorted(records.iter().filter_map(RequestRecord::tpot_ms));
        let e2e: Vec<f64> = records.iter().filter_map(RequestRecord::e2e_ms).collect();
        let start = records
            .iter()
            .map(|r| r.arrival_ms)
            .fold(f64::INFINITY, f64::min);
        let end = records
            .iter()
            .filter_map(|r| r.finish_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        let duration_ms = if end > start { end - start } else { 0.0 };
        let input: u64 = records.iter().map(|r| r.input_tokens).sum();
        let cached: u64 = records.iter().map(|r| r.cached_tokens).sum();
        let host: u64 = records.iter().map(|r| r.host_cached_tokens).sum();
        let disk: u64 = records.iter().map(|r| r.disk_cached_tokens).sum();
        let output: u64 = finished.iter().map(|r| r.output_tokens).sum();
        Summary {
            router: router.to_owned(),
            num_requests: records.len(),
            completed_requests: finished.len(),
            duration_ms,
            wall_time_ms,
            prefix_cache_reused_ratio: ratio(cached as f64, input as f64),
            host_reused_ratio: ratio(host as f64, input as f64),
            disk_reused_ratio: ratio(disk as f64, input as f64),
            mean_ttft_ms: mean(&ttft),
            median_ttft_ms: percentile(&ttft, 50.0),
            p90_ttft_ms: percentile(&ttft, 90.0),
            p99_ttft_ms: percentile(&ttft, 99.0),
            mean_tpot_ms: mean(&tpot),
            p90_tpot_ms: percentile(&tpot, 90.0),
            mean_e2e_latency_ms: mean(&e2e),
            output_throughput_tok_s: ratio(output as f64, duration_ms / 1000.0),
            requests_per_wall_s: ratio(records.len() as f64, wall_time_ms / 1000.0),
            preemptions,
            disagg: None,
            sla_attainment: None,
            worker_hours: None,
            gpu_hours: None,
            replicas: None,
        }
    }
}

pub(crate) fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

pub(crate) fn mean(values: &[f64]) -> f64 {
    ratio(values.iter().sum(), values.len() as f64)
}

pub(crate) fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// The `p`-th percentile of sorted `values` by nearest rank (`values[round((n - 1)·p/100)]`),
/// as NVIDIA Dynamo's replay reports it.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&values, 50.0), 3.0);
        assert_eq!(percentile(&values, 90.0), 5.0);
        assert_eq!(percentile(&values, 80.0), 4.0);
        assert_eq!(percentile(&[], 90.0), 0.0);
    }
}
