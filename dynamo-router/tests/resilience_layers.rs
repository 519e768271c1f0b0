//! dynamo-core's resilience layers around a router: a circuit breaker on each worker (put on by
//! hand, or by the router's builder), retries or migration in front. A dead or flaky worker
//! costs the clients nothing and sees only a few requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dynamo_core::layers::{CircuitBreakerConfig, CircuitBreakerLayer, RetryConfig, RetryLayer};
use dynamo_core::{BlockSize, EchoEngine, EngineExt, Error, GenerateRequest, WorkerId};
use dynamo_router::migrate::{Migrate, MigrationConfig};
use dynamo_router::{RoundRobin, RouterService};
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn a_breaker_per_worker_and_retries_in_front_hide_a_dead_worker() {
    let dead_calls = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&dead_calls);
    let dead = tower::service_fn(move |_: GenerateRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err::<dynamo_core::TokenStream, _>(Error::unavailable(
            "worker down",
        )))
    });
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default().failure_threshold(2));
    let router = RouterService::builder(BlockSize::new(4).expect("a block size")).build();
    router.insert_worker(WorkerId::new(1), breaker.layer(dead));
    router.insert_worker(WorkerId::new(2), breaker.layer(EchoEngine::new()));
    // The router may pick the dead worker again until it ejects it (three failures in a row by
    // default); the breaker answers the third itself, and a fourth attempt goes elsewhere.
    let mut engine = RetryLayer::new(RetryConfig::default().max_attempts(4)).layer(router);

    for id in 0..20 {
        let request =
            GenerateRequest::new(format!("r{id}"), "echo", vec![id, 1, 2, 3, 4]).with_max_tokens(2);
        let answer = engine.generate_all(request).await.expect("an answer");
        assert_eq!(answer.tokens, [id, 1]);
    }
    let dead = dead_calls.load(Ordering::SeqCst);
    assert!(
        dead <= 2,
        "the breaker (or the router's ejection) stopped the requests: {dead}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_builder_s_breaker_isolates_a_worker_that_fails_one_request_in_two() {
    // Fails every other call: never three in a row, so the router alone would keep it.
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&flaky_calls);
    let flaky = tower::service_fn(move |request: GenerateRequest| {
        let failing = calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        async move {
            if failing {
                return Err(Error::unavailable("worker flaky"));
            }
            let mut echo = EchoEngine::new();
            echo.generate(request).await
        }
    });
    let breaker = CircuitBreakerConfig::default()
        .failure_threshold(100)
        .failure_rate(4, 8)
        .cool_down(Duration::from_secs(600));
    let router = RouterService::builder(BlockSize::new(4).expect("a block size"))
        .policy(RoundRobin::new())
        .circuit_breaker(breaker)
        .build();
    router.insert_worker(WorkerId::new(1), flaky);
    router.insert_worker(WorkerId::new(2), EchoEngine::new());
    let mut engine = Migrate::new(router, MigrationConfig::default());

    for id in 0..40 {
        let request =
            GenerateRequest::new(format!("r{id}"), "echo", vec![id, 1, 2, 3, 4]).with_max_tokens(2);
        let answer = engine.generate_all(request).await.expect("an answer");
        assert_eq!(answer.tokens, [id, 1]);
    }
    // Its eighth outcome made 4 failures of the last 8: the breaker opened and answered for it
    // from then on.
    assert_eq!(flaky_calls.load(Ordering::SeqCst), 8);
}
