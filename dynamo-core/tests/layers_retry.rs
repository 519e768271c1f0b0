//! The retry layer: transient failures before the first token are retried, within limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::layers::{RetryConfig, RetryLayer};
use dynamo_core::{EngineExt, FinishReason};
use dynamo_core::{Error, ErrorClass, GenerateRequest, TokenChunk, TokenStream};
use tower::{Layer, Service};

/// Fails its first `failures` attempts with `error` (in the call, or in the stream's first
/// item when `in_stream`), then streams one token.
#[derive(Clone)]
struct Flaky {
    attempts: Arc<AtomicU32>,
    failures: u32,
    error: fn() -> Error,
    in_stream: bool,
}

impl Flaky {
    fn new(failures: u32, error: fn() -> Error) -> Self {
        Flaky {
            attempts: Arc::default(),
            failures,
            error,
            in_stream: false,
        }
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Service<GenerateRequest> for Flaky {
    type Response = TokenStream;
    type Error = Error;
    type Future = std::future::Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt >= self.failures {
            let chunk = TokenChunk {
                finish_reason: Some(FinishReason::Length),
                ..TokenChunk::token(7)
            };
            return std::future::ready(Ok(TokenStream::from_chunks([Ok(chunk)])));
        }
        let error = (self.error)();
        if self.in_stream {
            // The worst case: the stream cancels the very token its request came with.
            let token = request.cancellation().clone();
            let chunks = futures::stream::iter([Err(error)]);
            return std::future::ready(Ok(TokenStream::new(chunks, token)));
        }
        std::future::ready(Err(error))
    }
}

fn request(id: u32) -> GenerateRequest {
    GenerateRequest::new(format!("r{id}"), "m", vec![1, 2, 3])
}

fn config() -> RetryConfig {
    RetryConfig::default().backoff(Duration::ZERO)
}

#[tokio::test(start_paused = true)]
async fn retries_a_transient_failure() {
    for in_stream in [false, true] {
        let engine = Flaky {
            in_stream,
            ..Flaky::new(2, || Error::unavailable("worker restarting"))
        };
        let mut retried = RetryLayer::new(config().max_attempts(3)).layer(engine.clone());
        let request = request(1);
        let token = request.cancellation().clone();
        let generation = retried.generate_all(request).await.unwrap();
        assert_eq!(generation.tokens, [7]);
        assert_eq!(engine.attempts(), 3, "in_stream: {in_stream}");
        assert!(
            !token.is_cancelled(),
            "failed attempts cancel only their own work"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts() {
    let engine = Flaky::new(u32::MAX, || Error::overloaded("queue full"));
    let mut retried = RetryLayer::new(config().max_attempts(4)).layer(engine.clone());
    let error = retried.generate_all(request(1)).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Overloaded);
    assert_eq!(engine.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn does_not_retry_invalid_or_cancelled_requests() {
    let engine = Flaky::new(u32::MAX, || Error::invalid_request("bad"));
    let mut retried = RetryLayer::new(config()).layer(engine.clone());
    let error = retried.generate_all(request(1)).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert_eq!(engine.attempts(), 1);

    let engine = Flaky::new(u32::MAX, || Error::Cancelled);
    let mut retried = RetryLayer::new(config()).layer(engine.clone());
    assert!(
        retried
            .generate_all(request(1))
            .await
            .unwrap_err()
            .is_cancelled()
    );
    assert_eq!(engine.attempts(), 1);

    // A request cancelled by its caller is not sent again, whatever the error.
    let engine = Flaky::new(u32::MAX, || Error::unavailable("down"));
    let mut retried = RetryLayer::new(config()).layer(engine.clone());
    let cancelled = request(2);
    cancelled.cancellation().cancel();
    assert!(retried.generate_all(cancelled).await.is_err());
    assert_eq!(engine.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_after_the_first_token_is_not_retried() {
    #[derive(Clone, Default)]
    struct MidStream(Arc<AtomicU32>);
    impl Service<GenerateRequest> for MidStream {
        type Response = TokenStream;
        type Error = Error;
        type Future = std::future::Ready<Result<TokenStream, Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: GenerateRequest) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            let chunks = [Ok(TokenChunk::token(1)), Err(Error::unavailable("lost"))];
            std::future::ready(Ok(TokenStream::from_chunks(chunks)))
        }
    }
    let engine = MidStream::default();
    let mut retried = RetryLayer::new(config()).layer(engine.clone());
    let error = retried.generate_all(request(1)).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable);
    assert_eq!(engine.0.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_under_a_total_outage() {
    let (ratio, floor_per_sec) = (0.2, 1);
    let window = RetryConfig::default().budget_window;
    let engine = Flaky::new(u32::MAX, || Error::unavailable("everything is down"));
    let layer = RetryLayer::new(config().max_attempts(10).budget(ratio, floor_per_sec));
    let requests = 500u32;
    // The test runs on one thread: the recorder sees every retry decision.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    for id in 0..requests {
        let mut retried = layer.layer(engine.clone());
        assert!(retried.generate_all(request(id)).await.is_err());
    }
    let floor = f64::from(floor_per_sec) * window.as_secs_f64();
    let cap = f64::from(requests) * (1.0 + f64::from(ratio)) + floor;
    let attempts = f64::from(engine.attempts());
    assert!(attempts <= cap, "{attempts} attempts, cap {cap}");
    // Without a budget, 10 attempts each would have been 5000.
    assert!(
        attempts > f64::from(requests),
        "the budget allows some retries"
    );
    // Each attempt after a request's first is a retry counted; a request the budget stopped
    // short is counted too.
    let text = metrics.render();
    let counted = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let retried = counted("dynamo_retries_total{outcome=\"retried\"}");
    assert_eq!(retried, attempts - f64::from(requests), "{text}");
    assert!(
        counted("dynamo_retries_total{outcome=\"no_budget\"}") > 0.0,
        "{text}"
    );
}
