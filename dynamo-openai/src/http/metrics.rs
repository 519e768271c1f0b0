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
//! Series by worker that must leave `/metrics` with their worker go in [`WorkerGauges`]
//! instead, which `/metrics` renders after the exporter's output ([`render`]).
//!
//! A served model resolves its handles once, at first use ([`ModelMetrics`]), rather than
//! looking its label set up in the recorder on every request; the process's recorder must be
//! installed before the first request (a handle resolved earlier records nothing).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use dynamo_core::Usage;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

mod worker_gauges;

pub use worker_gauges::WorkerGauges;

const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Install a Prometheus recorder as the process's global `metrics` recorder, with latency
/// buckets from 1 ms to 2 min, and return the handle that renders it for
/// [`Gateway::with_metrics`](crate::Gateway::with_metrics). Call it once, from `main`.
///
/// The recorder keeps every histogram sample until a render of `/metrics` or
/// [`PrometheusHandle::run_upkeep`] drains it, and this spawns nothing that would: call
/// `run_upkeep` every few seconds (`dynamo-serve` does, every 5 s on a thread of its own), or
/// a gateway nobody scrapes grows by a few hundred bytes a request.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)?
        .install_recorder()
}

/// The text of `/metrics`: `handle`'s series, then those of [`WorkerGauges::global`].
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    WorkerGauges::global().render_into(&mut text);
    text
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

/// The gauge of requests in flight for `model`.
pub(crate) fn in_flight(model: &str) -> metrics::Gauge {
    metrics::gauge!("dynamo_frontend_inflight_requests", "model" => model.to_owned())
}

/// The endpoints whose successful answers [`ModelMetrics`] counts through a held handle.
const ENDPOINTS: [&str; 3] = ["chat_completions", "completions", "responses"];

/// One served model's metric handles, each resolved from the recorder the first time it is
/// used (so a series appears in `/metrics` exactly when it would with the macros) and reused
/// after: a request records without hashing its labels. The handles are the same series the
/// free functions above record to.
#[derive(Debug, Default)]
pub(crate) struct ModelMetrics {
    in_flight: OnceLock<metrics::Gauge>,
    time_to_first_token: OnceLock<metrics::Histogram>,
    inter_token_latency: OnceLock<metrics::Histogram>,
    input_tokens: OnceLock<metrics::Counter>,
    output_tokens: OnceLock<metrics::Counter>,
    cached_tokens: OnceLock<metrics::Counter>,
    answered: [OnceLock<metrics::Counter>; ENDPOINTS.len()],
}

impl ModelMetrics {
    pub(crate) fn in_flight(&self, model: &str) -> metrics::Gauge {
        self.in_flight.get_or_init(|| in_flight(model)).clone()
    }

    /// Count a request to `endpoint` that ended with 200.
    pub(crate) fn answered(&self, model: &str, endpoint: &'static str) {
        match ENDPOINTS.iter().position(|known| *known == endpoint) {
            Some(index) => self.answered[index]
                .get_or_init(|| {
                    metrics::counter!(
                        "dynamo_frontend_requests_total",
                        "model" => model.to_owned(),
                        "endpoint" => endpoint,
                        "status" => StatusCode::OK.as_str().to_owned(),
                    )
                })
                .increment(1),
            None => request_done(model, endpoint, StatusCode::OK),
        }
    }

    pub(crate) fn time_to_first_token(&self, model: &str, elapsed: Duration) {
        let name = "dynamo_frontend_time_to_first_token_seconds";
        seconds(&self.time_to_first_token, name, model, elapsed);
    }

    pub(crate) fn inter_token_latency(&self, model: &str, elapsed: Duration) {
        let name = "dynamo_frontend_inter_token_latency_seconds";
        seconds(&self.inter_token_latency, name, model, elapsed);
    }

    pub(crate) fn tokens(&self, model: &str, usage: &Usage) {
        let counter = |name: &'static str| metrics::counter!(name, "model" => model.to_owned());
        self.input_tokens
            .get_or_init(|| counter("dynamo_frontend_input_tokens_total"))
            .increment(u64::from(usage.prompt_tokens));
        self.output_tokens
            .get_or_init(|| counter("dynamo_frontend_output_tokens_total"))
            .increment(u64::from(usage.completion_tokens));
        self.cached_tokens
            .get_or_init(|| counter("dynamo_frontend_cached_tokens_total"))
            .increment(u64::from(usage.cached_tokens));
    }
}

/// Record `elapsed` in `model`'s histogram `name`, resolved into `cell` on first use.
fn seconds(
    cell: &OnceLock<metrics::Histogram>,
    name: &'static str,
    model: &str,
    elapsed: Duration,
) {
    cell.get_or_init(|| metrics::histogram!(name, "model" => model.to_owned()))
        .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_the_worker_gauges_after_the_exporters_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("dynamo_frontend_inflight_requests", "model" => "m").set(2.0);
        });
        let gauges = WorkerGauges::global();
        gauges.set("dynamo_test_render_blocks", "render/0", 64.0);
        let text = render(&handle);
        let exporter = text
            .find("dynamo_frontend_inflight_requests{model=\"m\"} 2\n")
            .expect("the exporter's series");
        let ours = text
            .find("# TYPE dynamo_test_render_blocks gauge\ndynamo_test_render_blocks{worker=\"render/0\"} 64\n")
            .expect("the worker gauge");
        assert!(exporter < ours, "{text}");

        gauges.remove("render/0");
        assert!(!render(&handle).contains("dynamo_test_render_blocks"));
    }
}
