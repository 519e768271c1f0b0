//! dynamo-core's resilience layers around a router: a circuit breaker on each worker, retries
//! in front. A dead worker costs the clients nothing and sees only a few requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dynamo_core::layers::{CircuitBreakerConfig, CircuitBreakerLayer, RetryConfig, RetryLayer};
use dynamo_core::{BlockSize, EchoEngine, EngineExt, Error, GenerateRequest, WorkerId};
use dynamo_router::RouterService;
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
