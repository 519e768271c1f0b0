//! The simulated worker as a live [`Engine`]: tokens stream in (scaled) real time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{
    Error, FinishReason, GenerateRequest, KvEvent, StorageTier, TokenChunk, TokenStream, Usage,
    WorkerId,
};
use futures::future::{Ready, ready};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineConfig, SimRequest, SimWorker, StepReport, WorkerMetrics};
use crate::timing::StepTiming;

/// The settings of a live simulated engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveConfig {
    /// The simulated worker.
    pub engine: EngineConfig,
    /// Steps take `1 / speedup` of the timing model's duration. Default 1.
    pub speedup: f64,
    /// Output tokens of a request that sets no `max_tokens`. Default 16.
    pub default_max_tokens: u32,
    /// Requests accepted but not yet taken by the engine task; more are refused as
    /// overloaded. Default 1,024.
    pub submission_capacity: usize,
    /// The worker id its KV events carry.
    pub worker: WorkerId,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            engine: EngineConfig::default(),
            speedup: 1.0,
            default_max_tokens: 16,
            submission_capacity: 1024,
            worker: WorkerId::new(0),
        }
    }
}

struct Submission {
    request: SimRequest,
    prompt: Arc<[u32]>,
    cancel: CancellationToken,
    chunks: mpsc::Sender<Result<TokenChunk, Error>>,
}

/// A simulated worker behind the [`Engine`](dynamo_core::Engine) interface, for standing in
/// for a real engine behind a router or a gateway.
///
/// Build it with [`LiveEngine::new`], which hands back the future that runs the worker: spawn
/// it on your runtime. Each request streams one token per step it is decoded in, at the pace of
/// the timing model divided by the speed-up (the tokens echo the prompt); its KV events go to
/// the sender given to [`LiveEngine::new`], if any.
///
/// **Queues.** Submissions wait in a channel of [`LiveConfig::submission_capacity`]; when it is
/// full, `call` fails with [`Error::Overloaded`]. Each response stream buffers up to its
/// request's output length, so the engine never blocks on a slow reader. KV events are sent
/// with `try_send`: when the event channel is full, events are dropped and counted in
/// [`LiveEngine::dropped_events`] (a router notices the gap in event ids and resyncs).
///
/// **Cancellation.** Dropping a response stream, or cancelling the request, removes the
/// request from the worker at its next step and frees its blocks.
///
/// ```
/// use std::time::Duration;
/// use dynamo_core::{EngineExt, GenerateRequest};
/// use dynamo_mocker::{LiveConfig, LiveEngine, PolynomialTiming};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let (engine, worker) = LiveEngine::new(LiveConfig::default(), PolynomialTiming::default(), None);
/// tokio::spawn(worker);
/// let request = GenerateRequest::new("r1", "sim", vec![1, 2, 3]).with_max_tokens(4);
/// let generation = engine.clone().generate_all(request).await?;
/// assert_eq!(generation.tokens, [1, 2, 3, 1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LiveEngine {
    submissions: mpsc::Sender<Submission>,
    state: Arc<Mutex<LiveState>>,
    config: LiveConfig,
}

#[derive(Debug, Default)]
struct LiveState {
    metrics: WorkerMetrics,
    dropped_events: u64,
    next_id: u64,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("request", &self.request.id)
            .finish_non_exhaustive()
    }
}

impl LiveEngine {
    /// The engine, and the future that runs its worker until every handle is dropped.
    pub fn new(
        config: LiveConfig,
        timing: impl StepTiming + 'static,
        events: Option<mpsc::Sender<KvEvent>>,
    ) -> (LiveEngine, impl Future<Output = ()> + Send + 'static) {
        let (submissions, receiver) = mpsc::channel(config.submission_capacity.max(1));
        let worker = SimWorker::new(config.engine, timing).record_tokens(true);
        // Before the first step, the load of an idle worker (its cache size included).
        let state = Arc::new(Mutex::new(LiveState {
            metrics: worker.metrics(),
            ..LiveState::default()
        }));
        let run = run_worker(worker, receiver, events, state.clone(), config);
        (
            LiveEngine {
                submissions,
                state,
                config,
            },
            run,
        )
    }

    /// The worker's load after its last step.
    pub fn metrics(&self) -> WorkerMetrics {
        self.state.lock().metrics
    }

    /// KV events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.state.lock().dropped_events
    }
}

impl tower::Service<GenerateRequest> for LiveEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        if let Err(error) = request.validate() {
            return ready(Err(error));
        }
        let output = request
            .limits
            .max_tokens
            .unwrap_or(self.config.default_max_tokens);
        let id = {
            let mut state = self.state.lock();
            state.next_id += 1;
            state.next_id
        };
        let blocks = request
            .block_hasher(self.config.engine.block_size)
            .hash_blocks(&request.tokens);
        let (chunks, stream) = mpsc::channel(output as usize + 2);
        let cancel = request.cancellation().child_token();
        let submission = Submission {
            request: SimRequest {
                id,
                prompt_blocks: blocks,
                prompt_tokens: request.tokens.len() as u64,
                output_tokens: u64::from(output),
            },
            prompt: Arc::from(request.tokens.as_slice()),
            cancel: cancel.clone(),
            chunks,
        };
        if let Err(error) = self.submissions.try_send(submission) {
            let message = match error {
                mpsc::error::TrySendError::Full(_) => {
                    "the simulated engine's submission queue is full"
                }
                mpsc::error::TrySendError::Closed(_) => "the simulated engine stopped",
            };
            return ready(Err(Error::overloaded(message)));
        }
        ready(Ok(TokenStream::from_receiver(stream, cancel)))
    }
}

struct Active {
    prompt: Arc<[u32]>,
    cancel: CancellationToken,
    chunks: mpsc::Sender<Result<TokenChunk, Error>>,
    produced: u64,
    prompt_tokens: u32,
    cached_tokens: u64,
}

async fn run_worker(
    mut worker: SimWorker,
    mut submissions: mpsc::Receiver<Submission>,
    events: Option<mpsc::Sender<KvEvent>>,
    state: Arc<Mutex<LiveState>>,
    config: LiveConfig,
) {
    let mut active: HashMap<u64, Active> = HashMap::new();
    let mut report = StepReport::default();
    let mut next_event_id = 0;
    loop {
        if worker.is_idle() {
            // Nothing to do: wait for work, or stop when every handle is gone.
            let Some(submission) = submissions.recv().await else {
                return;
            };
            admit(&mut worker, &mut active, submission);
        }
        while let Ok(submission) = submissions.try_recv() {
            admit(&mut worker, &mut active, submission);
        }
        active.retain(|&id, request| {
            let gone = request.cancel.is_cancelled() || request.chunks.is_closed();
            if gone {
                worker.cancel(id);
            }
            !gone
        });
        if !worker.step_into(&mut report) {
            continue;
        }
        let pause = report.duration_ms / config.speedup.max(f64::MIN_POSITIVE);
        tokio::time::sleep(Duration::from_secs_f64(pause / 1000.0)).await;
        deliver(&report, &mut active, &mut worker);
        if let Some(events) = &events {
            for data in report.events.drain(..) {
                let event = KvEvent {
                    worker: config.worker,
                    event_id: next_event_id,
                    tier: StorageTier::Device,
                    data,
                };
                next_event_id += 1;
                if events.try_send(event).is_err() {
                    state.lock().dropped_events += 1;
                }
            }
        }
        state.lock().metrics = worker.metrics();
    }
}

fn admit(worker: &mut SimWorker, active: &mut HashMap<u64, Active>, submission: Submission) {
    let id = submission.request.id;
    active.insert(
        id,
        Active {
            prompt: submission.prompt,
            cancel: submission.cancel,
            chunks: submission.chunks,
            produced: 0,
            prompt_tokens: submission.request.prompt_tokens as u32,
            cached_tokens: 0,
        },
    );
    worker.add_request(submission.request);
}

/// Send each request its step's token, and the final chunk to those that finished.
fn deliver(report: &StepReport, active: &mut HashMap<u64, Active>, worker: &mut SimWorker) {
    for id in &report.produced {
        if let Some(request) = active.get_mut(id) {
            let token = request.prompt[(request.produced as usize) % request.prompt.len()];
            request.produced += 1;
            // The channel holds the whole output: a failed send means the reader left.
            let _ = request.chunks.try_send(Ok(TokenChunk::token(token)));
        }
    }
    for (id, cached) in worker.drain_cache_hits() {
        if let Some(request) = active.get_mut(&id) {
            request.cached_tokens = cached;
        }
    }
    for id in &report.finished {
        if let Some(request) = active.remove(id) {
            let usage = Usage {
                prompt_tokens: request.prompt_tokens,
                cached_tokens: request.cached_tokens as u32,
                completion_tokens: request.produced as u32,
            };
            let _ = request
                .chunks
                .try_send(Ok(TokenChunk::finish(FinishReason::Length, Some(usage))));
        }
    }
}
