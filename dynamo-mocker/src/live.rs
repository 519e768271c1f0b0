//! The simulated worker as a live [`Engine`]: tokens stream in (scaled) real time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{
    Error, FinishReason, GenerateRequest, KvEvent, KvPublisher, QueuedEngine, StorageTier,
    Submission, TokenChunk, TokenStream, Usage, WorkerId,
};
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
    /// Requests accepted but not yet taken by the engine task; while that many wait, the
    /// engine is not ready. Default 1,024.
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

/// A simulated worker behind the [`Engine`](dynamo_core::Engine) interface, for standing in
/// for a real engine behind a router or a gateway.
///
/// Build it with [`LiveEngine::new`], which hands back the future that runs the worker: spawn
/// it on your runtime. Each request streams one token per step it is decoded in, at the pace of
/// the timing model divided by the speed-up (the tokens echo the prompt); its KV events go to
/// the sender given to [`LiveEngine::new`], if any.
///
/// **Queues.** The simulated worker holds at most `max_num_seqs` requests (running, or waiting
/// for KV memory); the rest wait in a queue of [`LiveConfig::submission_capacity`], and while
/// it is full the engine is not ready (`poll_ready` is `Pending`). Each response stream buffers up to its
/// request's output length, so the engine never blocks on a slow reader. KV events are sent
/// with `try_send` by a [`KvPublisher`]: when the event channel is full, events are dropped
/// and counted in [`LiveEngine::dropped_events`]; a router notices the gap in event ids and
/// asks for a snapshot, which [`LiveEngine::kv_publisher`] sends.
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
    queue: QueuedEngine,
    /// The worker's load after its last step.
    metrics: Arc<Mutex<WorkerMetrics>>,
    publisher: KvPublisher,
}

impl LiveEngine {
    /// The engine, and the future that runs its worker until every handle is dropped.
    pub fn new(
        config: LiveConfig,
        timing: impl StepTiming + 'static,
        events: Option<mpsc::Sender<KvEvent>>,
    ) -> (LiveEngine, impl Future<Output = ()> + Send + 'static) {
        let default_max_tokens = config.default_max_tokens;
        let (queue, receiver) = QueuedEngine::new(config.submission_capacity, move |request| {
            // The simulator samples no real tokens, so it cannot enforce an output format.
            if request.format.is_some() {
                return Err(dynamo_core::OutputFormat::unsupported("mocker"));
            }
            // The stream holds the whole output, so the worker never waits on a reader.
            let output = request.limits.max_tokens.unwrap_or(default_max_tokens);
            Ok(output as usize + 2)
        });
        let worker = SimWorker::new(config.engine, timing).record_tokens(true);
        // Before the first step, the load of an idle worker (its cache size included).
        let metrics = Arc::new(Mutex::new(worker.metrics()));
        let publisher = KvPublisher::new(config.worker, config.engine.block_size, events);
        let run = run_worker(worker, receiver, publisher.clone(), metrics.clone(), config);
        let engine = LiveEngine {
            queue,
            metrics,
            publisher,
        };
        (engine, run)
    }

    /// The worker's load after its last step.
    pub fn metrics(&self) -> WorkerMetrics {
        *self.metrics.lock()
    }

    /// KV events dropped because the event channel was full.
    pub fn dropped_events(&self) -> u64 {
        self.publisher.dropped()
    }

    /// The publisher of the engine's KV events: [`KvPublisher::snapshot`] answers a consumer
    /// that missed some.
    pub fn kv_publisher(&self) -> &KvPublisher {
        &self.publisher
    }
}

impl tower::Service<GenerateRequest> for LiveEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = <QueuedEngine as tower::Service<GenerateRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.queue.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        self.queue.call(request)
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
    publisher: KvPublisher,
    metrics: Arc<Mutex<WorkerMetrics>>,
    config: LiveConfig,
) {
    let mut active: HashMap<u64, Active> = HashMap::new();
    let mut report = StepReport::default();
    let mut next_id = 0;
    let mut take = |worker: &mut SimWorker, active: &mut HashMap<u64, Active>, submission| {
        next_id += 1;
        admit(worker, active, next_id, submission, &config);
    };
    loop {
        if worker.is_idle() {
            // Nothing to do: wait for work, or stop when every handle is gone.
            let Some(submission) = submissions.recv().await else {
                return;
            };
            take(&mut worker, &mut active, submission);
        }
        // Take only what the worker can hold; the rest waits in the bounded queue, which is
        // what makes the engine not ready when it is full.
        while active.len() < config.engine.max_num_seqs {
            let Ok(submission) = submissions.try_recv() else {
                break;
            };
            take(&mut worker, &mut active, submission);
        }
        active.retain(|&id, request| {
            let gone = request.cancel.is_cancelled() || request.chunks.is_closed();
            if gone {
                worker.cancel(id);
            }
            !gone
        });
        if !worker.step_into(&mut report) {
            // Waiting for a copy from the host tier: sleep until it ends.
            if let Some(wake_ms) = worker.next_wake_ms() {
                let pause =
                    (wake_ms - worker.now_ms()).max(0.0) / config.speedup.max(f64::MIN_POSITIVE);
                tokio::time::sleep(Duration::from_secs_f64(pause / 1000.0)).await;
                worker.set_time(wake_ms);
            }
            continue;
        }
        let pause = report.duration_ms / config.speedup.max(f64::MIN_POSITIVE);
        tokio::time::sleep(Duration::from_secs_f64(pause / 1000.0)).await;
        deliver(&report, &mut active, &mut worker);
        publisher.publish_all(StorageTier::Device, report.events.drain(..));
        for (tier, event) in report.tier_events.drain(..) {
            publisher.publish_all(tier, [event]);
        }
        *metrics.lock() = worker.metrics();
    }
}

fn admit(
    worker: &mut SimWorker,
    active: &mut HashMap<u64, Active>,
    id: u64,
    submission: Submission,
    config: &LiveConfig,
) {
    let Submission {
        request,
        chunks,
        cancel,
    } = submission;
    let output = request
        .limits
        .max_tokens
        .unwrap_or(config.default_max_tokens);
    let prompt_blocks = request
        .block_hasher(config.engine.block_size)
        .hash_blocks(&request.tokens);
    active.insert(
        id,
        Active {
            prompt: Arc::from(request.tokens.as_slice()),
            cancel,
            chunks,
            produced: 0,
            prompt_tokens: u32::try_from(request.tokens.len()).unwrap_or(u32::MAX),
            cached_tokens: 0,
        },
    );
    worker.add_request(SimRequest {
        id,
        prompt_blocks,
        prompt_tokens: request.tokens.len() as u64,
        output_tokens: u64::from(output),
    });
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
