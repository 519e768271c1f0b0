//! The router's readiness is its capacity, so tower's own layers (load shedding, concurrency
//! limits) act on it as a tower user expects.

use std::future::poll_fn;
use std::time::Duration;

use dynamo_core::{
    BlockSize, EchoEngine, EngineExt, Error, ErrorClass, GenerateRequest, TokenStream, WorkerId,
};
use dynamo_router::{BusyThresholds, QueueOrder, RouterService};
use futures::StreamExt;
use tower::{Service, ServiceBuilder};

/// Two slow workers that are busy at one active request each, and a wait queue of `queue`.
fn router(queue: usize) -> RouterService {
    let router = RouterService::builder(BlockSize::new(4).expect("not zero"))
        .thresholds(BusyThresholds {
            max_active_requests: Some(1),
            ..BusyThresholds::default()
        })
        .queue(QueueOrder::Fcfs, queue)
        .build();
    for id in 1..=2 {
        let slow = EchoEngine::new().with_token_delay(Duration::from_millis(100));
        router.insert_worker(WorkerId::new(id), slow);
    }
    router
}

fn request(id: u32) -> GenerateRequest {
    GenerateRequest::new(format!("r{id}"), "m", vec![id, 1, 2, 3, 4]).with_max_tokens(4)
}

async fn drain(mut stream: TokenStream) -> usize {
    let mut tokens = 0;
    while let Some(chunk) = stream.next().await {
        tokens += chunk.expect("a chunk").tokens.len();
    }
    tokens
}

#[tokio::test(start_paused = true)]
async fn load_shedding_refuses_while_every_worker_is_busy_and_recovers() {
    let router = router(0);
    let mut gateway = ServiceBuilder::new()
        .map_err(Error::from_boxed)
        .load_shed()
        .concurrency_limit(64)
        .service(router.clone())
        .boxed_engine();

    let first = gateway.generate(request(1)).await.expect("worker 1");
    let second = gateway.generate(request(2)).await.expect("worker 2");

    // Both workers are busy and the queue holds nobody: tower sheds the load.
    let shed = gateway.generate(request(3)).await.expect_err("shed");
    assert_eq!(shed.class(), ErrorClass::Overloaded);
    assert_eq!(shed.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(router.queued(), 0);

    // A finished stream frees its worker, and the next request goes through.
    assert_eq!(drain(first).await, 4);
    let third = gateway.generate(request(3)).await.expect("a free worker");
    assert_eq!(drain(third).await, 4);
    assert_eq!(drain(second).await, 4);
}

#[tokio::test(start_paused = true)]
async fn without_shedding_a_caller_waits_for_readiness() {
    let mut router = router(0);
    let first = router.generate(request(1)).await.expect("worker 1");
    let second = router.generate(request(2)).await.expect("worker 2");

    let waiting = tokio::spawn({
        let mut router = router.clone();
        async move { drain(router.generate(request(3)).await.expect("placed")).await }
    });
    // However long it waits, it is not placed while both workers are busy. The time is
    // virtual (`start_paused`): the elapsed wait is what is checked, not a guess at timing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!waiting.is_finished());
    assert_eq!(
        router
            .selector()
            .load()
            .load(WorkerId::new(1))
            .active_requests,
        1
    );

    drop(first);
    assert_eq!(waiting.await.expect("the task"), 4);
    assert_eq!(drain(second).await, 4);
}

#[tokio::test(start_paused = true)]
async fn a_queue_with_room_is_capacity_too() {
    let mut router = router(1);
    let first = router.generate(request(1)).await.expect("worker 1");
    let _second = router.generate(request(2)).await.expect("worker 2");

    // Every worker is busy, but the queue has a place: ready, and the request waits there.
    poll_fn(|cx| router.poll_ready(cx)).await.expect("ready");
    let queued = tokio::spawn(router.call(request(3)));
    while router.queued() == 0 {
        tokio::task::yield_now().await;
    }
    // Now the queue is full as well.
    let waker = futures::task::noop_waker();
    assert!(
        router
            .poll_ready(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );

    drop(first);
    let stream = queued.await.expect("the task").expect("placed");
    assert_eq!(drain(stream).await, 4);
}
