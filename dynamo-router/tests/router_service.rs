//! The router as a tower Service over echo workers, driven as a user would.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_core::{
    BlockHasher, BlockSize, BoxEngine, EchoEngine, EngineExt, ErrorClass, GenerateRequest,
    Generation, KvEvent, KvEventData, Result, StorageTier, TokenStream, WorkerId,
};
use dynamo_router::{BusyThresholds, KvCost, QueueOrder, RouterService, SharedIndex};
use futures::StreamExt;
use tower::Service;
use tower::discover::Change;

type Served = Arc<Mutex<Vec<u64>>>;

/// An echo worker that logs its id for every request it serves.
fn worker(id: u64, served: &Served, token_delay: Duration) -> BoxEngine {
    let served = served.clone();
    let echo = EchoEngine::new().with_token_delay(token_delay);
    tower::service_fn(move |request: GenerateRequest| {
        served.lock().unwrap().push(id);
        let mut echo = echo.clone();
        async move { echo.generate(request).await }
    })
    .boxed_engine()
}

/// Run a whole generation on a clone of the router, as a spawned task would.
async fn generate_all(mut router: RouterService, request: GenerateRequest) -> Result<Generation> {
    router.generate_all(request).await
}

async fn generate(mut router: RouterService, request: GenerateRequest) -> Result<TokenStream> {
    router.generate(request).await
}

fn block_size() -> BlockSize {
    BlockSize::new(4).unwrap()
}

fn prompt(id: &str, tokens: std::ops::Range<u32>) -> GenerateRequest {
    GenerateRequest::new(id, "echo", tokens.collect::<Vec<_>>()).with_max_tokens(4)
}

fn one_at_a_time(order: QueueOrder, capacity: usize, served: &Served) -> RouterService {
    let router = RouterService::builder(block_size())
        .policy(KvCost::default())
        .thresholds(BusyThresholds {
            max_active_requests: Some(1),
            ..Default::default()
        })
        .queue(order, capacity)
        .build();
    router.insert_worker(
        WorkerId::new(0),
        worker(0, served, Duration::from_millis(10)),
    );
    router
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn streams_through_a_worker_and_releases_the_booking_as_it_goes() {
    let served = Served::default();
    let router = RouterService::builder(block_size()).build();
    router.insert_worker(
        WorkerId::new(7),
        worker(7, &served, Duration::from_millis(5)),
    );
    let mut stream = generate(router.clone(), prompt("a", 0..10)).await.unwrap();
    let load = || router.selector().load().load(WorkerId::new(7));
    assert_eq!(load().active_requests, 1);
    assert_eq!(load().active_prefill_tokens, 10);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.tokens, [0]);
    assert_eq!(
        load().active_prefill_tokens,
        0,
        "released at the first token"
    );
    assert_eq!(load().active_requests, 1);
    let rest: Vec<_> = stream.by_ref().collect().await;
    assert_eq!(rest.len(), 4, "three more tokens and the final chunk");
    assert_eq!(load().active_requests, 0, "released when the stream ends");
    assert_eq!(*served.lock().unwrap(), [7]);

    let mut stream = generate(router.clone(), prompt("b", 0..10)).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    assert_eq!(
        load(),
        Default::default(),
        "released when the stream is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_answers_overloaded_and_a_release_wakes_the_waiting_request() {
    let served = Served::default();
    let router = one_at_a_time(QueueOrder::Fcfs, 1, &served);
    let first = generate(router.clone(), prompt("a", 0..8)).await.unwrap();
    let waiting = tokio::spawn(generate_all(router.clone(), prompt("b", 0..8)));
    settle().await;
    assert_eq!(router.queued(), 1);
    // The router is not ready now; a caller that calls anyway is refused at once.
    let waker = futures::task::noop_waker();
    let mut context = std::task::Context::from_waker(&waker);
    assert!(router.clone().poll_ready(&mut context).is_pending());
    let err = router.clone().call(prompt("c", 0..8)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Overloaded);
    assert!(err.retry_after().is_some());
    drop(first);
    let generation = waiting.await.unwrap().unwrap();
    assert_eq!(generation.tokens, [0, 1, 2, 3]);
    assert_eq!(router.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiting_request_leaves_the_queue() {
    let served = Served::default();
    let router = one_at_a_time(QueueOrder::Fcfs, 4, &served);
    let first = generate(router.clone(), prompt("a", 0..8)).await.unwrap();
    let request = prompt("b", 0..8);
    let cancel = request.cancellation().clone();
    let waiting = tokio::spawn(generate(router.clone(), request));
    settle().await;
    assert_eq!(router.queued(), 1);
    cancel.cancel();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(router.queued(), 0);
    drop(first);
    assert_eq!(
        *served.lock().unwrap(),
        [0],
        "the cancelled request never reached the worker"
    );
}

#[tokio::test(start_paused = true)]
async fn shortest_uncached_work_is_served_first() {
    let served = Served::default();
    let router = one_at_a_time(QueueOrder::ShortestUncachedFirst, 4, &served);
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = generate(router.clone(), prompt("a", 0..8)).await.unwrap();
    let mut tasks = Vec::new();
    for (id, len) in [("long", 400), ("short", 8), ("medium", 40)] {
        let (router, order) = (router.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = generate(router, prompt(id, 1000..1000 + len))
                .await
                .unwrap();
            order.lock().unwrap().push(id);
            while stream.next().await.is_some() {}
        }));
        settle().await;
    }
    assert_eq!(router.queued(), 3);
    drop(first);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["short", "medium", "long"]);
}

#[tokio::test(start_paused = true)]
async fn a_removed_worker_keeps_its_cache_for_the_grace_period_then_is_forgotten() {
    let served = Served::default();
    let index = SharedIndex::new(block_size());
    let router = RouterService::builder(block_size())
        .kv_events(index.clone())
        .forget_after(Duration::from_secs(30))
        .build();
    let (changes, discover) = futures::channel::mpsc::unbounded();
    let driver = tokio::spawn(router.discover(discover));
    let send = |change| changes.unbounded_send(Ok::<_, Infallible>(change)).unwrap();
    send(Change::Insert(
        WorkerId::new(1),
        worker(1, &served, Duration::ZERO),
    ));
    let tokens: Vec<u32> = (0..8).collect();
    index
        .apply(&KvEvent {
            worker: WorkerId::new(1),
            event_id: 0,
            tier: StorageTier::Device,
            data: KvEventData::Stored {
                parent: None,
                block_size: block_size(),
                blocks: BlockHasher::new(block_size()).hash_blocks(&tokens),
            },
        })
        .unwrap();
    let cached = || {
        let hashes = BlockHasher::new(block_size()).sequence_hashes(&tokens);
        index.overlaps(&hashes).get(WorkerId::new(1)).total()
    };

    // The connection drops and comes back within the grace period: the cache is still known.
    send(Change::Remove(WorkerId::new(1)));
    settle().await;
    assert!(router.selector().workers().is_empty());
    // Virtual time (`start_paused`): the grace period's passing is what these waits check.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(cached(), 2);
    send(Change::Insert(
        WorkerId::new(1),
        worker(1, &served, Duration::ZERO),
    ));
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(cached(), 2, "a worker that came back is not forgotten");

    // Gone for longer than the grace period: forgotten, by the discover future's own timer.
    send(Change::Remove(WorkerId::new(1)));
    settle().await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(cached(), 0);
    drop(changes);
    driver.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn discovery_adds_and_removes_workers() {
    let served = Served::default();
    let router = RouterService::builder(block_size()).build();
    let (changes, discover) = futures::channel::mpsc::unbounded();
    let driver = tokio::spawn(router.discover(discover));
    let send = |change| changes.unbounded_send(Ok::<_, Infallible>(change)).unwrap();

    let err = generate(router.clone(), prompt("none", 0..8))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable);

    send(Change::Insert(
        WorkerId::new(1),
        worker(1, &served, Duration::ZERO),
    ));
    send(Change::Insert(
        WorkerId::new(2),
        worker(2, &served, Duration::ZERO),
    ));
    settle().await;
    assert_eq!(
        router.selector().workers(),
        [WorkerId::new(1), WorkerId::new(2)]
    );
    send(Change::Remove(WorkerId::new(1)));
    settle().await;
    for i in 0..4 {
        generate_all(
            router.clone(),
            prompt(&format!("r{i}"), i * 100..i * 100 + 8),
        )
        .await
        .unwrap();
    }
    assert_eq!(*served.lock().unwrap(), [2, 2, 2, 2]);
    drop(changes);
    driver.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn approximate_mode_sends_a_repeated_prefix_back_to_its_worker() {
    let served = Served::default();
    let router = RouterService::builder(block_size())
        .policy(KvCost::default())
        .build();
    for w in 0..4 {
        router.insert_worker(WorkerId::new(w), worker(w, &served, Duration::ZERO));
    }
    for round in 0..3 {
        generate_all(router.clone(), prompt(&format!("again{round}"), 0..64))
            .await
            .unwrap();
    }
    let served = served.lock().unwrap();
    assert!(served.iter().all(|&w| w == served[0]), "{served:?}");
}

#[tokio::test(start_paused = true)]
async fn routers_nest_as_engines() {
    let served = Served::default();
    let inner = RouterService::builder(block_size()).build();
    inner.insert_worker(WorkerId::new(5), worker(5, &served, Duration::ZERO));
    let outer = RouterService::builder(block_size()).build();
    outer.insert_worker(WorkerId::new(1), inner.clone());
    let generation = generate_all(outer.clone(), prompt("n", 0..6))
        .await
        .unwrap();
    assert_eq!(generation.tokens, [0, 1, 2, 3]);
    assert_eq!(*served.lock().unwrap(), [5]);
}

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_requests_with_one_prefix_spread_over_the_workers() {
    let served = Served::default();
    let router = RouterService::builder(block_size()).build();
    for w in 0..4 {
        router.insert_worker(
            WorkerId::new(w),
            worker(w, &served, Duration::from_millis(20)),
        );
    }
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let mut tokens: Vec<u32> = (0..256).collect();
            tokens.extend([10_000 + i, 20_000 + i, 30_000 + i, 40_000 + i]);
            let request = GenerateRequest::new(format!("c{i}"), "echo", tokens).with_max_tokens(8);
            tokio::spawn(generate_all(router.clone(), request))
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().tokens.len(), 8);
    }
    let mut counts = [0usize; 4];
    for &w in served.lock().unwrap().iter() {
        counts[w as usize] += 1;
    }
    assert!(counts.iter().all(|&n| n >= 20), "{counts:?}");
    assert!(counts.iter().all(|&n| n <= 100), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_forked_request_gives_back_each_choice_as_it_ends_but_the_last() {
    use dynamo_core::{FinishReason, TokenChunk};

    let (send, receive) = futures::channel::mpsc::unbounded::<Result<TokenChunk>>();
    let receive = Arc::new(Mutex::new(Some(receive)));
    let engine = tower::service_fn(move |_: GenerateRequest| {
        let chunks = receive.lock().unwrap().take().unwrap();
        async move {
            let cancel = tokio_util::sync::CancellationToken::new();
            Ok::<_, dynamo_core::Error>(TokenStream::new(chunks, cancel))
        }
    })
    .boxed_engine();
    let router = RouterService::builder(block_size()).build();
    router.insert_worker(WorkerId::new(1), engine);
    let mut request = prompt("forked", 0..10).with_n(3);
    let choices = request.choice_tokens();
    let mut stream = generate(router.clone(), request).await.unwrap();
    let sequences = || {
        router
            .selector()
            .load()
            .load(WorkerId::new(1))
            .active_requests
    };
    let token = |index| TokenChunk {
        index,
        ..TokenChunk::token(5)
    };
    let finish = |index, more_choices| TokenChunk {
        index,
        more_choices,
        ..TokenChunk::finish(FinishReason::Length, None)
    };
    let mut next = async |chunk: TokenChunk| {
        send.unbounded_send(Ok(chunk)).unwrap();
        stream.next().await.unwrap().unwrap();
    };
    assert_eq!(sequences(), 3);
    next(token(0)).await;
    assert_eq!(sequences(), 3);
    // Choice 1 finishes first: its sequence is given back at once.
    next(finish(1, true)).await;
    assert_eq!(sequences(), 2);
    // The frontend ends choice 2 itself (a stop string it matched): given back at the next chunk,
    // and not again when the engine's finish for it comes.
    choices[2].cancel();
    next(token(0)).await;
    assert_eq!(sequences(), 1);
    next(finish(2, true)).await;
    assert_eq!(sequences(), 1);
    // The last choice keeps the booking until the stream ends.
    next(finish(0, false)).await;
    assert_eq!(sequences(), 1);
    drop(send);
    assert!(stream.next().await.is_none());
    assert_eq!(sequences(), 0);
}
