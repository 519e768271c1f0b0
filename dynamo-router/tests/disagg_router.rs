//! The disaggregated router over test workers that follow the hand-over protocol: the answer a
//! client sees is the aggregated one, whichever way the prompt is placed.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_core::{
    BlockHasher, BlockSize, BoxEngine, Disaggregation, EngineExt, Error, FinishReason,
    GenerateRequest, KvHandoff, TokenChunk, TokenStream, Usage, WorkerId,
};
use dynamo_router::disagg::{
    AlwaysRemote, DisaggRouter, ExpectedTtftPlacement, RouterCostPlacement, Threshold,
};
use dynamo_router::{Booking, LoadGuard, RouterService};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<Vec<GenerateRequest>>>;

fn block_size() -> BlockSize {
    BlockSize::new(4).unwrap()
}

/// A worker whose next token is the last one plus one: its answer depends on every token
/// before it, as a model's does. A prefill-phase request ends with a hand-over of the prompt's
/// full blocks. `fail` makes every request fail; `hold` keeps streams open until cancelled, and
/// records each request's token, which dropping its stream cancels (as an engine's does).
#[derive(Clone, Default)]
struct Successor {
    seen: Seen,
    fail: bool,
    hold: Option<Arc<Mutex<Vec<CancellationToken>>>>,
}

impl Successor {
    fn engine(&self, id: u64) -> BoxEngine {
        let worker = self.clone();
        tower::service_fn(move |request: GenerateRequest| {
            let worker = worker.clone();
            async move { worker.generate(id, request) }
        })
        .boxed_engine()
    }

    fn generate(&self, id: u64, request: GenerateRequest) -> Result<TokenStream, Error> {
        self.seen.lock().unwrap().push(request.clone());
        if self.fail {
            return Err(Error::unavailable("this worker always fails"));
        }
        if let Some(hold) = &self.hold {
            let cancel = request.cancellation().child_token();
            hold.lock().unwrap().push(cancel.clone());
            let watched = cancel.clone();
            let pending = futures::stream::once(async move {
                watched.cancelled().await;
                Ok(TokenChunk::finish(FinishReason::Cancelled, None))
            });
            return Ok(TokenStream::new(pending, cancel));
        }
        let prompt = request.tokens.as_slice();
        let max = request.limits.max_tokens.unwrap_or(8);
        let last = *prompt.last().unwrap();
        let mut chunks: Vec<_> = (1..=max).map(|i| Ok(TokenChunk::token(last + i))).collect();
        let mut end = TokenChunk::finish(
            FinishReason::Length,
            Some(Usage {
                prompt_tokens: prompt.len() as u32,
                cached_tokens: 4,
                completion_tokens: max,
            }),
        );
        if request.disaggregation == Disaggregation::Prefill {
            let blocks = request.block_hasher(block_size()).hash_blocks(prompt);
            end.kv_handoff = Some(KvHandoff {
                source: WorkerId::new(id),
                address: None,
                transfer: 7,
                blocks: blocks.iter().map(|b| b.sequence).collect(),
            });
        }
        chunks.push(Ok(end));
        Ok(TokenStream::from_chunks(chunks))
    }
}

fn pools(prefill: &Successor, decode: &Successor) -> (RouterService, RouterService) {
    let prefill_router = RouterService::builder(block_size()).build();
    prefill_router.insert_worker(WorkerId::new(1), prefill.engine(1));
    let decode_router = RouterService::builder(block_size()).build();
    decode_router.insert_worker(WorkerId::new(2), decode.engine(2));
    (prefill_router, decode_router)
}

fn request(len: u32, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new("r", "m", (1..=len).collect::<Vec<_>>()).with_max_tokens(max_tokens)
}

/// Every chunk of a generation, for comparing streams.
async fn chunks(mut router: DisaggRouter, request: GenerateRequest) -> Vec<TokenChunk> {
    let stream = router.generate(request).await.unwrap();
    stream.map(Result::unwrap).collect().await
}

#[tokio::test]
async fn a_remote_prefill_hands_over_and_the_client_sees_one_answer() {
    let (prefill, decode) = (Successor::default(), Successor::default());
    let (p, d) = pools(&prefill, &decode);
    let router = DisaggRouter::new(p, d, AlwaysRemote).unwrap();
    let got = chunks(router, request(10, 4)).await;
    let tokens: Vec<u32> = got.iter().flat_map(|c| c.tokens.clone()).collect();
    assert_eq!(tokens, [11, 12, 13, 14], "the aggregated answer");
    let last = got.last().unwrap();
    assert_eq!(last.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        last.usage,
        Some(Usage {
            prompt_tokens: 10,
            cached_tokens: 4,
            completion_tokens: 4
        })
    );
    assert!(last.kv_handoff.is_none(), "the hand-over stays inside");

    let prefill_seen = prefill.seen.lock().unwrap();
    assert_eq!(prefill_seen.len(), 1);
    assert_eq!(prefill_seen[0].disaggregation, Disaggregation::Prefill);
    assert_eq!(prefill_seen[0].limits.max_tokens, Some(1));
    let decode_seen = decode.seen.lock().unwrap();
    assert_eq!(decode_seen.len(), 1);
    let continued = &decode_seen[0];
    assert_eq!(continued.tokens.as_slice(), (1..=11).collect::<Vec<_>>());
    assert_eq!(continued.limits.max_tokens, Some(3));
    let Disaggregation::Decode(handoff) = &continued.disaggregation else {
        panic!("the decode worker got no hand-over: {continued:?}");
    };
    let prompt: Vec<u32> = (1..=10).collect();
    let expected: Vec<_> = BlockHasher::new(block_size())
        .hash_blocks(&prompt)
        .iter()
        .map(|b| b.sequence)
        .collect();
    assert_eq!(
        (handoff.source, &handoff.blocks),
        (WorkerId::new(1), &expected)
    );
}

#[tokio::test]
async fn a_failed_prefill_falls_back_to_the_decode_worker() {
    let prefill = Successor {
        fail: true,
        ..Successor::default()
    };
    let decode = Successor::default();
    let (p, d) = pools(&prefill, &decode);
    let router = DisaggRouter::new(p, d, AlwaysRemote).unwrap();
    let got = chunks(router, request(10, 4)).await;
    let tokens: Vec<u32> = got.iter().flat_map(|c| c.tokens.clone()).collect();
    assert_eq!(tokens, [11, 12, 13, 14]);
    let decode_seen = decode.seen.lock().unwrap();
    assert_eq!(decode_seen[0].disaggregation, Disaggregation::None);
    assert_eq!(
        decode_seen[0].tokens.len(),
        10,
        "the whole prompt, computed locally"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prefill_past_its_timeout_is_cancelled_and_the_decode_worker_computes_the_prompt() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let prefill = Successor {
        hold: Some(held.clone()),
        ..Successor::default()
    };
    let decode = Successor::default();
    let (p, d) = pools(&prefill, &decode);
    let router = DisaggRouter::new(p, d, AlwaysRemote)
        .unwrap()
        .prefill_timeout(Duration::from_secs(1));
    let got = chunks(router.clone(), request(10, 4)).await;
    let tokens: Vec<u32> = got.iter().flat_map(|c| c.tokens.clone()).collect();
    assert_eq!(tokens, [11, 12, 13, 14], "the aggregated answer");
    let decode_seen = decode.seen.lock().unwrap();
    assert_eq!(decode_seen.len(), 1);
    assert_eq!(decode_seen[0].disaggregation, Disaggregation::None);
    assert_eq!(decode_seen[0].tokens.len(), 10, "the whole prompt");
    // The prefill worker's request was given up: cancelled there, and neither pool keeps a
    // booking.
    let prefill_request = held.lock().unwrap().first().cloned().unwrap();
    assert!(prefill_request.is_cancelled());
    let (p, d) = (router.prefill().selector(), router.decode().selector());
    assert_eq!(p.load().load(WorkerId::new(1)).active_requests, 0);
    assert_eq!(d.load().load(WorkerId::new(2)).active_requests, 0);
}

/// Prefill workers 1 and 2 and decode workers 3 and 4 (each with its own record), every prompt
/// remote.
fn two_by_two() -> (DisaggRouter, [Successor; 4]) {
    let workers: [Successor; 4] = Default::default();
    let prefill = RouterService::builder(block_size()).build();
    let decode = RouterService::builder(block_size()).build();
    for (id, worker) in (1..).zip(&workers) {
        let pool = if id <= 2 { &prefill } else { &decode };
        pool.insert_worker(WorkerId::new(id), worker.engine(id));
    }
    (
        DisaggRouter::new(prefill, decode, AlwaysRemote).unwrap(),
        workers,
    )
}

/// The worker (1 to 4) that was sent request `id`, in each pool.
fn served(workers: &[Successor; 4], id: &str) -> (u64, u64) {
    let saw = |range: std::ops::Range<usize>| {
        let mut ids = range.filter(|&i| {
            workers[i]
                .seen
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.id.as_str() == id)
        });
        let found = ids.next().expect("a worker of the pool saw it") as u64 + 1;
        assert!(ids.next().is_none(), "one worker of the pool saw {id}");
        found
    };
    (saw(0..2), saw(2..4))
}

#[tokio::test]
async fn the_prefill_pool_routes_by_cache_and_the_decode_pool_by_load() {
    let (router, workers) = two_by_two();
    let ask = |id: String, first: u32| {
        let request = GenerateRequest::new(id, "m", (first..first + 32).collect::<Vec<_>>())
            .with_max_tokens(3);
        chunks(router.clone(), request)
    };
    // Each prompt sent again goes to the prefill worker that computed it, and to the decode
    // worker that continued it (its own overlap), on idle pools.
    for prompt in 0..4 {
        let first = 1000 * (prompt + 1);
        ask(format!("p{prompt}"), first).await;
        ask(format!("p{prompt}-again"), first).await;
        assert_eq!(
            served(&workers, &format!("p{prompt}-again")),
            served(&workers, &format!("p{prompt}")),
            "prompt {prompt}"
        );
    }
    // A new prompt's decode worker is the one without a long prompt queued, whichever it is.
    for (busy, free) in [(3, 4), (4, 3), (3, 4)] {
        let booking = Booking {
            blocks: Vec::new(),
            prefill_tokens: 4000,
            ..Booking::default()
        };
        let guard = router
            .decode()
            .selector()
            .load()
            .book(WorkerId::new(busy), booking);
        let id = format!("new-{busy}");
        ask(id.clone(), 100_000 + 100 * busy as u32).await;
        drop(guard);
        assert_eq!(served(&workers, &id).1, free, "with worker {busy} loaded");
    }
}

#[tokio::test]
async fn without_a_prefill_worker_or_when_it_does_not_pay_the_decode_worker_prefills() {
    let decode = Successor::default();
    let decode_router = RouterService::builder(block_size()).build();
    decode_router.insert_worker(WorkerId::new(2), decode.engine(2));
    let empty = RouterService::builder(block_size()).build();
    let router = DisaggRouter::new(empty, decode_router, AlwaysRemote).unwrap();
    let tokens: Vec<u32> = chunks(router, request(10, 2))
        .await
        .iter()
        .flat_map(|c| c.tokens.clone())
        .collect();
    assert_eq!(tokens, [11, 12]);

    // Dynamo's rule keeps a 10-token prompt local.
    let (prefill, decode) = (Successor::default(), Successor::default());
    let (p, d) = pools(&prefill, &decode);
    let router = DisaggRouter::new(p, d, Threshold::default()).unwrap();
    chunks(router, request(10, 2)).await;
    assert!(prefill.seen.lock().unwrap().is_empty());
    assert_eq!(decode.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_idle_prefill_worker_of_a_flexible_pool_serves_the_whole_request() {
    let (prefill, decode) = (Successor::default(), Successor::default());
    let (p, d) = pools(&prefill, &decode);
    let flexible = ExpectedTtftPlacement {
        prefill_workers_decode: true,
        ..ExpectedTtftPlacement::default()
    };
    let router = DisaggRouter::new(p, d, flexible).unwrap();
    let tokens: Vec<u32> = chunks(router.clone(), request(10, 4))
        .await
        .iter()
        .flat_map(|c| c.tokens.clone())
        .collect();
    assert_eq!(tokens, [11, 12, 13, 14], "the aggregated answer");
    let prefill_seen = prefill.seen.lock().unwrap();
    assert_eq!(prefill_seen.len(), 1);
    assert_eq!(prefill_seen[0].disaggregation, Disaggregation::None);
    assert_eq!(prefill_seen[0].limits.max_tokens, Some(4));
    assert!(decode.seen.lock().unwrap().is_empty());
    // Nothing stays booked on either pool.
    let (p, d) = (router.prefill().selector(), router.decode().selector());
    assert_eq!(p.load().load(WorkerId::new(1)).active_requests, 0);
    assert_eq!(d.load().load(WorkerId::new(2)).active_requests, 0);
}

#[tokio::test]
async fn the_router_s_cost_sends_the_whole_request_to_the_less_loaded_pool() {
    let (prefill, decode) = (Successor::default(), Successor::default());
    let (p, d) = pools(&prefill, &decode);
    let router = DisaggRouter::new(p, d, RouterCostPlacement::default()).unwrap();
    // A long prompt queued on a worker, as another request would book it.
    let queued = |pool: &RouterService, id: u64| -> LoadGuard {
        let booking = Booking {
            blocks: Vec::new(),
            prefill_tokens: 4000,
            ..Booking::default()
        };
        pool.selector().load().book(WorkerId::new(id), booking)
    };
    let tokens = |chunks: Vec<TokenChunk>| -> Vec<u32> {
        chunks.iter().flat_map(|c| c.tokens.clone()).collect()
    };
    // The decode worker is the queued one: the prefill worker serves the request whole.
    let guard = queued(router.decode(), 2);
    let answer = tokens(chunks(router.clone(), request(10, 4)).await);
    assert_eq!(answer, [11, 12, 13, 14], "the aggregated answer");
    drop(guard);
    {
        let prefill_seen = prefill.seen.lock().unwrap();
        assert_eq!(prefill_seen.len(), 1);
        assert_eq!(prefill_seen[0].disaggregation, Disaggregation::None);
        assert!(decode.seen.lock().unwrap().is_empty());
    }
    // Now the prefill worker is: the decode worker computes the prompt.
    let guard = queued(router.prefill(), 1);
    let answer = tokens(chunks(router.clone(), request(10, 4)).await);
    assert_eq!(answer, [11, 12, 13, 14]);
    drop(guard);
    assert_eq!(prefill.seen.lock().unwrap().len(), 1);
    let decode_seen = decode.seen.lock().unwrap();
    assert_eq!(decode_seen.len(), 1);
    assert_eq!(decode_seen[0].disaggregation, Disaggregation::None);
    // Nothing stays booked on either pool.
    let (p, d) = (router.prefill().selector(), router.decode().selector());
    assert_eq!(p.load().load(WorkerId::new(1)).active_requests, 0);
    assert_eq!(d.load().load(WorkerId::new(2)).active_requests, 0);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_decode() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let prefill = Successor::default();
    let decode = Successor {
        hold: Some(held.clone()),
        ..Successor::default()
    };
    let (p, d) = pools(&prefill, &decode);
    let mut router = DisaggRouter::new(p, d, AlwaysRemote).unwrap();
    let mut stream = router.generate(request(10, 4)).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.tokens, [11], "the prefill's token comes first");
    // Wait until the decode worker holds the request, then hang up.
    let decode_token = loop {
        if let Some(token) = held.lock().unwrap().first().cloned() {
            break token;
        }
        tokio::task::yield_now().await;
    };
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), decode_token.cancelled())
        .await
        .expect("the decode worker's request is cancelled");
}

#[tokio::test]
async fn pools_of_different_block_sizes_are_refused() {
    let p = RouterService::builder(BlockSize::new(8).unwrap()).build();
    let d = RouterService::builder(block_size()).build();
    let error = DisaggRouter::new(p, d, AlwaysRemote).unwrap_err();
    assert_eq!((error.prefill, error.decode), (8, 4));
}
