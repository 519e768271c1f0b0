//! Where the time of a disaggregated replay's requests went: prefill, hand-over, decode.

use serde::Serialize;

use crate::summary::{RequestRecord, mean, percentile, sorted};

/// The spread of one measure over a set of requests, in ms (0 when the set is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let values = sorted(values);
        Spread {
            mean_ms: mean(&values),
            p50_ms: percentile(&values, 50.0),
            p90_ms: percentile(&values, 90.0),
            p99_ms: percentile(&values, 99.0),
        }
    }
}

/// A disaggregated replay's requests by placement, and the phases of the remote ones.
///
/// A remote request's time to first token is the sum of its three phases: `prefill` (arrival
/// to the end of its prompt on the prefill worker, queueing there included), `transfer` (the
/// hand-over of its KV) and `decode_wait` (the KV's arrival to the first token the decode
/// worker samples: its queue, and one decode step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DisaggSummary {
    /// Requests whose prompt a prefill worker computed.
    pub remote_requests: usize,
    /// Requests whose prompt the decode worker computed itself.
    pub local_requests: usize,
    /// Remote requests: arrival to the end of the prefill.
    pub prefill: Spread,
    /// Remote requests: the end of the prefill to the KV's arrival on the decode worker.
    pub transfer: Spread,
    /// Remote requests: the KV's arrival to the first token.
    pub decode_wait: Spread,
    /// Time to first token of the remote requests.
    pub remote_ttft: Spread,
    /// Time to first token of the local requests.
    pub local_ttft: Spread,
    /// Mean time per output token of the remote requests.
    pub remote_mean_tpot_ms: f64,
    /// Mean time per output token of the local requests.
    pub local_mean_tpot_ms: f64,
}

impl DisaggSummary {
    /// Summarise the records of a disaggregated replay (requests that never started count in
    /// neither placement).
    pub fn of(records: &[RequestRecord]) -> Self {
        let started = records.iter().filter(|r| r.worker != u64::MAX);
        let (remote, local): (Vec<&RequestRecord>, Vec<&RequestRecord>) =
            started.partition(|r| r.prefill_worker.is_some());
        let between = |from: fn(&RequestRecord) -> Option<f64>,
                       to: fn(&RequestRecord) -> Option<f64>| {
            Spread::of(remote.iter().filter_map(|r| Some(to(r)? - from(r)?)))
        };
        let tpot = |set: &[&RequestRecord]| {
            let values: Vec<f64> = set.iter().filter_map(|r| r.tpot_ms()).collect();
            mean(&values)
        };
        DisaggSummary {
            remote_requests: remote.len(),
            local_requests: local.len(),
            prefill: between(|r| Some(r.arrival_ms), |r| r.prefill_done_ms),
            transfer: between(|r| r.prefill_done_ms, |r| r.kv_arrival_ms),
            decode_wait: between(|r| r.kv_arrival_ms, |r| r.first_token_ms),
            remote_ttft: Spread::of(remote.iter().filter_map(|r| r.ttft_ms())),
            local_ttft: Spread::of(local.iter().filter_map(|r| r.ttft_ms())),
            remote_mean_tpot_ms: tpot(&remote),
            local_mean_tpot_ms: tpot(&local),
        }
    }
}
