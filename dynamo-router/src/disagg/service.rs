//! [`DisaggRouter`]: one Engine in front of a prefill pool and a decode pool.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{
    BlockSize, Disaggregation, Error, FinishReason, GenerateRequest, TokenChunk, TokenLogProb,
    TokenStream, Usage, WorkerId,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tower::Service;

use super::placement::{BookedWorker, Placement, PlacementContext, PlacementPolicy};
use super::router_cost::{Candidates, Unbooked, draw};
use crate::RouterService;
use crate::migrate::continuation::{as_one_request, continuation, count};
use crate::selector::RouteRequest;
use crate::service::Placed;

/// The two pools of a disaggregated router do not agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the prefill router hashes blocks of {prefill} tokens and the decode router of {decode}: \
     the prefill pool's blocks could not be found in the decode pool"
)]
pub struct BlockSizeMismatch {
    /// The prefill router's block size.
    pub prefill: u32,
    /// The decode router's block size.
    pub decode: u32,
}

/// Disaggregated prefill and decode as one [`Engine`](dynamo_core::Engine).
///
/// Two [`RouterService`]s hold the pools: prefill workers (routed KV-aware, as any router) and
/// decode workers (aggregated workers may join it too). For each request the service:
///
/// 1. books a decode worker through the decode router (its prefix overlap and load; the
///    request waits in that router's queue while every decode worker is busy);
/// 2. asks the prefill router for a prefill worker that is free now, without waiting;
/// 3. lets the [`PlacementPolicy`] choose: **local** sends the whole request to the decode
///    worker, as aggregated serving would; **remote** sends it to the prefill worker as a
///    [`Disaggregation::Prefill`] request (one output token), streams that token to the client
///    at once, then sends the request with the token appended to the decode worker as
///    [`Disaggregation::Decode`] with the prefill's [`KvHandoff`](dynamo_core::KvHandoff), and
///    streams the rest; **prefill worker** (a flexible-role pool,
///    [`ExpectedTtftPlacement::prefill_workers_decode`](super::ExpectedTtftPlacement::prefill_workers_decode))
///    sends the whole request to the prefill worker, as aggregated serving would.
///
/// A request of one output token, or one already marked with a phase, goes whole to its
/// decode worker.
///
/// The request never fails for disaggregation: with no free prefill worker, or a prefill that
/// fails or takes longer than [`prefill_timeout`](Self::prefill_timeout), the decode worker
/// computes the prompt itself; a decode worker that cannot pull the hand-over's blocks
/// computes them. The client sees one stream, with usage counted as for one request (the
/// prompt as sent, the cached tokens the prefill worker found, every generated token).
/// Dropping the stream cancels the request on both workers; blocks a prefill worker holds for
/// a hand-over that never comes are freed when their lease there ends.
///
/// Metrics: `dynamo_disagg_requests_total{placement}` with `remote`, `local` (the policy's
/// choice), `prefill_worker` (the whole request on the prefill worker), `no_prefill_worker`
/// and `fallback` (a failed remote prefill).
///
/// ```
/// use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest, WorkerId};
/// use dynamo_router::RouterService;
/// use dynamo_router::disagg::{DisaggRouter, Threshold};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let block_size = BlockSize::new(4)?;
/// let prefill = RouterService::builder(block_size).build();
/// let decode = RouterService::builder(block_size).build();
/// decode.insert_worker(WorkerId::new(1), EchoEngine::new());
/// // No prefill worker yet: every request is computed on the decode worker.
/// let mut router = DisaggRouter::new(prefill, decode, Threshold::default())?;
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3, 4, 5]).with_max_tokens(3);
/// assert_eq!(router.generate_all(request).await?.tokens, [1, 2, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DisaggRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prefill: RouterService,
    decode: RouterService,
    placement: Arc<dyn PlacementPolicy>,
    block_size: BlockSize,
    prefill_timeout: Duration,
}

/// What the prefill worker sent back.
struct Prefilled {
    tokens: Vec<u32>,
    log_probs: Option<Vec<TokenLogProb>>,
    usage: Option<Usage>,
    /// Why the prefill worker ended the request, when it was not the one token asked for.
    finished: Option<FinishReason>,
    handoff: Option<dynamo_core::KvHandoff>,
}

impl DisaggRouter {
    /// A router over the `prefill` and `decode` pools, placing prompts with `placement`; a
    /// prefill may take 30 s before the decode worker computes the prompt instead.
    ///
    /// # Errors
    ///
    /// [`BlockSizeMismatch`] when the two routers hash blocks of different sizes.
    pub fn new(
        prefill: RouterService,
        decode: RouterService,
        placement: impl PlacementPolicy,
    ) -> Result<Self, BlockSizeMismatch> {
        let (p, d) = (
            prefill.selector().config().block_size,
            decode.selector().config().block_size,
        );
        if p != d {
            return Err(BlockSizeMismatch {
                prefill: p.get(),
                decode: d.get(),
            });
        }
        Ok(DisaggRouter {
            inner: Arc::new(Inner {
                prefill,
                decode,
                placement: Arc::new(placement),
                block_size: d,
                prefill_timeout: Duration::from_secs(30),
            }),
        })
    }

    /// Give up on a remote prefill (and compute the prompt on the decode worker) after
    /// `timeout`.
    pub fn prefill_timeout(self, timeout: Duration) -> Self {
        let inner = &self.inner;
        DisaggRouter {
            inner: Arc::new(Inner {
                prefill: inner.prefill.clone(),
                decode: inner.decode.clone(),
                placement: Arc::clone(&inner.placement),
                block_size: inner.block_size,
                prefill_timeout: timeout,
            }),
        }
    }

    /// The prefill pool's router.
    pub fn prefill(&self) -> &RouterService {
        &self.inner.prefill
    }

    /// The decode pool's router.
    pub fn decode(&self) -> &RouterService {
        &self.inner.decode
    }
}

impl Inner {
    async fn dispatch(self: Arc<Self>, request: GenerateRequest) -> Result<TokenStream, Error> {
        request.validate()?;
        let route = RouteRequest::new(&request, self.block_size);
        let decode = self.decode.book(&route, request.cancellation()).await?;
        let whole =
            request.disaggregation != Disaggregation::None || request.limits.max_tokens == Some(1);
        if whole {
            return self.decode.run(decode, request).await;
        }
        let Some(prefill) = self.prefill.try_book(&route) else {
            record("no_prefill_worker");
            return self.decode.run(decode, request).await;
        };
        let context = self.context(&request, &route, &decode, &prefill);
        match self.placement.place(&context) {
            Placement::Local => {
                record("local");
                return self.decode.run(decode, request).await;
            }
            Placement::PrefillWorker => {
                record("prefill_worker");
                drop(decode);
                return self.prefill.run(prefill, request).await;
            }
            Placement::Remote => record("remote"),
        }
        let (chunks, receiver) = mpsc::channel(32);
        let cancel = request.cancellation().clone();
        tokio::spawn(self.remote(prefill, decode, request, chunks));
        Ok(TokenStream::from_receiver(receiver, cancel))
    }

    /// What the policy sees of the request and the two booked workers. The candidates' states
    /// leave out the prompt blocks other requests hold there (`in_flight`), which the pools'
    /// routers saw but do not report.
    fn context(
        &self,
        request: &GenerateRequest,
        route: &RouteRequest,
        decode: &Placed,
        prefill: &Placed,
    ) -> PlacementContext {
        let booked = |router: &RouterService, placed: &Placed| BookedWorker {
            cached_blocks: placed.cached().total(),
            load: router.selector().load().load(placed.worker()),
        };
        let (decode_booked, prefill_booked) =
            (booked(&self.decode, decode), booked(&self.prefill, prefill));
        let prompt_blocks = route.blocks.len() as u32;
        let unbooked = |placed: &Placed, booked: &BookedWorker| {
            let seen = Unbooked {
                cached: placed.cached(),
                in_flight: 0,
                booked: booked.load,
            };
            seen.state(
                placed.worker(),
                route.prompt_tokens,
                prompt_blocks,
                self.block_size,
            )
        };
        let sizes = [&self.prefill, &self.decode].map(|pool| pool.selector().workers().len());
        let id = request.id.as_str().bytes();
        let key = id.fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
        let candidates = Candidates {
            decode: unbooked(decode, &decode_booked),
            prefill: unbooked(prefill, &prefill_booked),
            prompt_blocks,
            prefill_share: sizes[0] as f64 / (sizes[0] + sizes[1]).max(1) as f64,
            draw: draw(key),
        };
        PlacementContext::from_booked(
            route.prompt_tokens,
            self.block_size,
            decode_booked,
            Some(prefill_booked),
        )
        .with_candidates(candidates)
    }

    /// Prefill on `prefill`, then decode on `decode`, sending the client's chunks on `chunks`
    /// until it hangs up.
    async fn remote(
        self: Arc<Self>,
        prefill: Placed,
        mut decode: Placed,
        request: GenerateRequest,
        chunks: mpsc::Sender<Result<TokenChunk, Error>>,
    ) {
        let prefill_worker = prefill.worker();
        let prefilled = tokio::select! {
            outcome = tokio::time::timeout(
                self.prefill_timeout,
                self.run_prefill(prefill, &request),
            ) => outcome,
            () = chunks.closed() => return,
        };
        let prefilled = match prefilled {
            Ok(Ok(prefilled)) => prefilled,
            failure => {
                let reason = match failure {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("it took longer than {:?}", self.prefill_timeout),
                };
                fallback(prefill_worker, &reason);
                let outcome = self.decode.run(decode, request).await;
                forward(outcome, &chunks, |chunk| chunk).await;
                return;
            }
        };
        let usage = prefilled.usage.unwrap_or_default();
        let ended = match prefilled.finished {
            Some(reason) => Some(reason),
            // No token: the prompt filled the model's context.
            None if prefilled.tokens.is_empty() => Some(FinishReason::Length),
            None => None,
        };
        if let Some(reason) = ended {
            let chunk = TokenChunk {
                tokens: prefilled.tokens,
                log_probs: prefilled.log_probs,
                finish_reason: Some(reason),
                usage: Some(usage),
                ..TokenChunk::default()
            };
            let _ = chunks.send(Ok(chunk)).await;
            return;
        }
        let first = TokenChunk {
            tokens: prefilled.tokens.clone(),
            log_probs: prefilled.log_probs,
            ..TokenChunk::default()
        };
        if chunks.send(Ok(first)).await.is_err() {
            return;
        }
        let phase = prefilled
            .handoff
            .map_or(Disaggregation::None, Disaggregation::Decode);
        let continued = continuation(&request, &prefilled.tokens, phase);
        decode.prefilled_elsewhere();
        let added = count(&prefilled.tokens);
        let outcome = self.decode.run(decode, continued).await;
        forward(outcome, &chunks, |mut chunk| {
            if let Some(decoded) = &mut chunk.usage {
                *decoded = as_one_request(*decoded, added, usage.cached_tokens);
            }
            chunk
        })
        .await;
    }

    /// Run the prefill phase on `placed` and collect what it sends.
    async fn run_prefill(
        &self,
        placed: Placed,
        request: &GenerateRequest,
    ) -> Result<Prefilled, Error> {
        let mut phase = request.clone();
        phase.disaggregation = Disaggregation::Prefill;
        phase.limits.max_tokens = Some(1);
        phase.limits.min_tokens = None;
        let mut stream = self.prefill.run(placed, phase).await?;
        let mut prefilled = Prefilled {
            tokens: Vec::new(),
            log_probs: None,
            usage: None,
            finished: None,
            handoff: None,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            prefilled.tokens.extend_from_slice(&chunk.tokens);
            if let Some(log_probs) = chunk.log_probs {
                prefilled
                    .log_probs
                    .get_or_insert_with(Vec::new)
                    .extend(log_probs);
            }
            if let Some(reason) = chunk.finish_reason {
                prefilled.usage = chunk.usage;
                prefilled.handoff = chunk.kv_handoff;
                // One token asked for: `Length` is the expected end, anything else ends the
                // request.
                if reason == FinishReason::Cancelled {
                    return Err(Error::Cancelled);
                }
                prefilled.finished = (reason != FinishReason::Length).then_some(reason);
            }
        }
        Ok(prefilled)
    }
}

/// Send every chunk of `outcome`, changed by `map`, until the client hangs up.
async fn forward(
    outcome: Result<TokenStream, Error>,
    chunks: &mpsc::Sender<Result<TokenChunk, Error>>,
    map: impl Fn(TokenChunk) -> TokenChunk,
) {
    let mut stream = match outcome {
        Ok(stream) => stream,
        Err(error) => {
            let _ = chunks.send(Err(error)).await;
            return;
        }
    };
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = chunks.closed() => return,
        };
        let Some(chunk) = chunk else { return };
        if chunks.send(chunk.map(&map)).await.is_err() {
            return;
        }
    }
}

fn record(placement: &'static str) {
    metrics::counter!("dynamo_disagg_requests_total", "placement" => placement).increment(1);
}

fn fallback(worker: WorkerId, reason: &str) {
    record("fallback");
    tracing::warn!(
        "remote prefill on worker {worker} failed ({reason}); the decode worker computes the prompt"
    );
}

impl Service<GenerateRequest> for DisaggRouter {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    /// Ready while the decode router is: every request ends on a decode worker.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut decode = self.inner.decode.clone();
        decode.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        Box::pin(Arc::clone(&self.inner).dispatch(request))
    }
}
