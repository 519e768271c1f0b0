//! The gateway's metrics, recorded through the `metrics` facade; [`install_prometheus`]
//! exposes them at `/metrics`.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `dynamo_frontend_requests_total` | counter | `model`, `endpoint`, `status` |
//! | `dynamo_frontend_inflight_requests` | gauge | `model` |
//! | `dynamo_frontend_time_to_first_token_seconds` | histogram | `model` |
//! | `dynamo_frontend_inter_token_latency_seconds` | histogram | `model` |
//! | `dynamo_frontend_input_tokens_total` | counter | `model` |
//! | `dynamo_frontend_output_tokens_total` | counter | `model` |
//! | `dynamo_frontend_cached_tokens_total` | counter | `model` |
//!
//! A router in front of the workers adds its own (`dynamo_router_*`, see `dynamo-router`).

use std::time::Duration;

use axum::http::StatusCode;
use dynamo_core::Usage;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Install a Prometheus recorder as the process's global `metrics` recorder, with latency
/// buckets from 1 ms to 2 min, and return the handle that renders it for
/// [`Gateway::with_metrics`](crate::Gateway::with_metrics). Call it once, from `main`.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)?
        .install_recorder()
}

pub(crate) fn request_done(model: &str, endpoint: &'static str, status: StatusCode) {
    metrics::counter!(
        "dynamo_frontend_requests_total",
        "model" => model.to_owned(),
        "endpoint" => endpoint,
        "status" => status.as_str().to_owned(),
    )
    .increment(1);
}

pub(crate) fn in_flight(model: &str, change: f64) {
    metrics::gauge!("dynamo_frontend_inflight_requests", "model" => model.to_owned())
        .increment(change);
}

pub(crate) fn time_to_first_token(model: &str, elapsed: Duration) {
    metrics::histogram!("dynamo_frontend_time_to_first_token_seconds", "model" => model.to_owned())
        .record(elapsed.as_secs_f64());
}

pub(crate) fn inter_token_latency(model: &str, elapsed: Duration) {
    metrics::histogram!("dynamo_frontend_inter_token_latency_seconds", "model" => model.to_owned())
        .record(elapsed.as_secs_f64());
}

pub(crate) fn tokens(model: &str, usage: &Usage) {
    let model = model.to_owned();
    metrics::counter!("dynamo_frontend_input_tokens_total", "model" => model.clone())
        .increment(u64::from(usage.prompt_tokens));
    metrics::counter!("dynamo_frontend_output_tokens_total", "model" => model.clone())
        .increment(u64::from(usage.completion_tokens));
    metrics::counter!("dynamo_frontend_cached_tokens_total", "model" => model)
        .increment(u64::from(usage.cached_tokens));
}
