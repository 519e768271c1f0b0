//! The circuit breaker: opens after failures in a row or a failure-rate window's failures,
//! refuses while open, probes once after the cool-down. Virtual time throughout.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::layers::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use dynamo_core::{EngineExt, Error, ErrorClass, GenerateRequest, TokenChunk, TokenStream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tower::Service;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthy,
    Failing,
    Invalid,
    /// Streams nothing until dropped.
    Hanging,
}

#[derive(Clone)]
struct Worker {
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicU32>,
}

impl Worker {
    fn new() -> Self {
        Worker {
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            calls: Arc::default(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode lock") = mode;
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<GenerateRequest> for Worker {
    type Response = TokenStream;
    type Error = Error;
    type Future = std::future::Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: GenerateRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().expect("mode lock");
        std::future::ready(match mode {
            Mode::Healthy => Ok(TokenStream::from_chunks([Ok(TokenChunk::token(1))])),
            Mode::Failing => Err(Error::unavailable("worker down")),
            Mode::Invalid => Err(Error::invalid_request("bad")),
            Mode::Hanging => Ok(TokenStream::new(
                futures::stream::pending(),
                CancellationToken::new(),
            )),
        })
    }
}

const COOL_DOWN: Duration = Duration::from_secs(5);

fn breaker(worker: &Worker) -> CircuitBreaker<Worker> {
    let config = CircuitBreakerConfig::default()
        .failure_threshold(3)
        .cool_down(COOL_DOWN);
    CircuitBreaker::new(worker.clone(), config)
}

fn request() -> GenerateRequest {
    GenerateRequest::new("r", "m", vec![1])
}

#[tokio::test(start_paused = true)]
async fn opens_after_failures_in_a_row_and_refuses_at_once() {
    let worker = Worker::new();
    let mut engine = breaker(&worker);
    worker.set(Mode::Failing);
    for _ in 0..3 {
        assert_eq!(engine.state(), CircuitState::Closed);
        let error = engine.generate_all(request()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }
    assert_eq!(engine.state(), CircuitState::Open);
    worker.set(Mode::Healthy);
    let error = engine.generate_all(request()).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable);
    assert_eq!(
        worker.calls(),
        3,
        "an open breaker does not reach the worker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count_and_invalid_requests_do_not_count() {
    let worker = Worker::new();
    let mut engine = breaker(&worker);
    for mode in [
        Mode::Failing,
        Mode::Failing,
        Mode::Healthy,
        Mode::Failing,
        Mode::Failing,
    ] {
        worker.set(mode);
        let _ = engine.generate_all(request()).await;
    }
    worker.set(Mode::Invalid);
    for _ in 0..10 {
        let _ = engine.generate_all(request()).await;
    }
    assert_eq!(engine.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_window_opens_on_failures_that_never_come_in_a_row() {
    let worker = Worker::new();
    let config = CircuitBreakerConfig::default()
        .failure_threshold(3)
        .failure_rate(4, 8)
        .cool_down(COOL_DOWN);
    let mut with_window = CircuitBreaker::new(worker.clone(), config);
    let mut in_a_row_only = breaker(&worker);
    // One request in two fails: never three in a row, half of every eight.
    for step in 0..8 {
        assert_eq!(with_window.state(), CircuitState::Closed, "step {step}");
        worker.set(if step % 2 == 0 {
            Mode::Failing
        } else {
            Mode::Healthy
        });
        let _ = with_window.generate_all(request()).await;
        let _ = in_a_row_only.generate_all(request()).await;
    }
    assert_eq!(with_window.state(), CircuitState::Open);
    assert_eq!(in_a_row_only.state(), CircuitState::Closed);

    // After the cool-down a successful probe closes it with an empty window.
    tokio::time::advance(COOL_DOWN).await;
    worker.set(Mode::Healthy);
    with_window.generate_all(request()).await.unwrap();
    assert_eq!(with_window.state(), CircuitState::Closed);
    worker.set(Mode::Failing);
    for _ in 0..2 {
        let _ = with_window.generate_all(request()).await;
    }
    assert_eq!(
        with_window.state(),
        CircuitState::Closed,
        "2 failures, 3 outcomes"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_through_and_closes_on_success() {
    // The test runs on one thread: the recorder sees every change of the breaker.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let worker = Worker::new();
    let mut engine = breaker(&worker);
    worker.set(Mode::Failing);
    for _ in 0..3 {
        let _ = engine.generate_all(request()).await;
    }
    tokio::time::advance(COOL_DOWN).await;
    assert_eq!(engine.state(), CircuitState::HalfOpen);

    // A probe in flight holds the slot: others are refused until its first chunk.
    worker.set(Mode::Hanging);
    let probe = engine.generate(request()).await.unwrap();
    let refused = engine.generate(request()).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Unavailable);
    assert_eq!(worker.calls(), 4);
    // A probe dropped before its outcome frees the slot.
    drop(probe);
    worker.set(Mode::Healthy);
    let mut probe = engine.generate(request()).await.unwrap();
    assert!(probe.next().await.unwrap().is_ok());
    assert_eq!(engine.state(), CircuitState::Closed);

    // Opened once, half-opened once (the second probe took the slot the first freed), closed
    // once; one request refused.
    let text = metrics.render();
    for series in [
        "dynamo_circuit_breaker_transitions_total{to=\"open\"} 1",
        "dynamo_circuit_breaker_transitions_total{to=\"half_open\"} 1",
        "dynamo_circuit_breaker_transitions_total{to=\"closed\"} 1",
        "dynamo_circuit_breaker_refused_total 1",
    ] {
        assert!(
            text.lines().any(|line| line == series),
            "{series} in\n{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_circuit_again() {
    let worker = Worker::new();
    let mut engine = breaker(&worker);
    worker.set(Mode::Failing);
    for _ in 0..3 {
        let _ = engine.generate_all(request()).await;
    }
    tokio::time::advance(COOL_DOWN).await;
    assert!(engine.generate_all(request()).await.is_err());
    assert_eq!(engine.state(), CircuitState::Open);
    assert_eq!(worker.calls(), 4);
    tokio::time::advance(COOL_DOWN / 2).await;
    assert_eq!(engine.state(), CircuitState::Open, "a full cool-down again");
    tokio::time::advance(COOL_DOWN / 2).await;
    worker.set(Mode::Healthy);
    assert!(engine.generate_all(request()).await.is_ok());
    assert_eq!(engine.state(), CircuitState::Closed);
}
