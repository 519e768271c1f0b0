//! The engine: requests in through a bounded queue, one model thread that batches every running
//! sequence into each step, tokens out through each request's stream.

mod admit;
mod preempt;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use dynamo_core::{
    Disaggregation, Error, FinishReason, GenerateRequest, HashedBlock, KvEvent, KvPublisher,
    QueuedEngine, RequestId, SequenceHash, StorageTier, Submission, TokenChunk, TokenStream,
};
use dynamo_kvbm::{
    BlockId, BlockPool, KvFetch, LowerTiers, OffloadCounters, PinnedBlock, PoolCounters,
    PrivateBlock,
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tower::Service;

use self::admit::{Waiting, end_cancelled};
use crate::engine_config::CandleConfig;
use crate::fork::{check_choices, fork};
use crate::forward::{KvStore, Rope, Row, forward};
use crate::grammar::Grammars;
use crate::handoff::{Arrivals, Handoffs, pull_then_queue};
use crate::sequence::{Sequence, advance, finish};
use crate::tiers::Tiers;
use crate::weights::LlamaWeights;

/// An [`Engine`](dynamo_core::Engine) running a llama-family model on candle.
///
/// Requests wait in a bounded queue ([`CandleConfig::queue_capacity`]) for the model thread;
/// while it is full the engine is not ready (`poll_ready` is `Pending`), so tower's load
/// shedding and concurrency limits see the real capacity. Cloning gives another handle to the
/// same model thread. The thread stops when every handle is dropped and the running sequences
/// have finished.
#[derive(Debug, Clone)]
pub struct CandleEngine {
    queue: QueuedEngine,
    counters: Arc<Mutex<PoolCounters>>,
    prefilled: Arc<AtomicU64>,
    preemptions: Arc<AtomicU64>,
    waiting: Arc<AtomicUsize>,
    publisher: KvPublisher,
    tiers: Option<LowerTiers>,
    fetch: Option<Arc<dyn KvFetch>>,
    arrivals: Arrivals,
}

impl CandleEngine {
    /// Start the model thread. KV events go to `events` when given (a full channel drops the
    /// event; the consumer sees the gap in `event_id` and asks for a snapshot, which
    /// [`kv_publisher`](Self::kv_publisher) sends).
    ///
    /// # Errors
    ///
    /// When a thread cannot be started, or the lower tiers the config asks for cannot be made
    /// (the disk tier's file cannot be created, say).
    pub fn start(
        weights: LlamaWeights,
        config: CandleConfig,
        events: Option<mpsc::Sender<KvEvent>>,
    ) -> std::io::Result<Self> {
        let context_length = weights.config().context_length;
        let max_running = config.max_running;
        let (queue, submissions) = QueuedEngine::new(config.queue_capacity, move |request| {
            check_choices(request, max_running)?;
            if request.tokens.len() >= context_length {
                return Err(Error::invalid_request(format!(
                    "the prompt has {} tokens; the model's context is {context_length}",
                    request.tokens.len(),
                )));
            }
            // Room for every chunk the request can produce, so the model thread never waits.
            let most = request
                .limits
                .max_tokens
                .map_or(context_length, |n| n as usize);
            let prompt = usize::from(request.sampling.prompt_logprobs.is_some());
            Ok((most.min(context_length) + 2) * request.n as usize + prompt)
        });
        // Before the first step: every block free.
        let prefilled = Arc::new(AtomicU64::new(0));
        let counters = Arc::new(Mutex::new(PoolCounters {
            capacity: config.blocks as usize,
            free: config.blocks as usize,
            ..PoolCounters::default()
        }));
        let publisher = KvPublisher::new(config.worker, config.block_size, events);
        let arrivals = Arrivals::default();
        let fetch = config.fetch.clone();
        let mut model = ModelThread::new(
            weights,
            config,
            publisher.clone(),
            Arc::clone(&counters),
            arrivals.clone(),
        );
        model.prefilled = Arc::clone(&prefilled);
        let preemptions = Arc::clone(&model.preemptions);
        let waiting = Arc::clone(&model.waiting_count);
        model.tiers = Tiers::start(
            model.config.host_blocks,
            model.config.disk.as_ref(),
            model.config.block_size,
            model.store.block_bytes(),
            model.config.worker,
        )?;
        model.pool.track_evictions(model.tiers.is_some());
        let tiers = model.tiers.as_ref().map(|tiers| tiers.lower().clone());
        std::thread::Builder::new()
            .name("dynamo-candle".to_owned())
            .spawn(move || model.run(submissions))?;
        Ok(CandleEngine {
            queue,
            counters,
            prefilled,
            preemptions,
            waiting,
            publisher,
            tiers,
            fetch,
            arrivals,
        })
    }

    /// The publisher of the engine's KV events: [`KvPublisher::snapshot`] answers a consumer
    /// that missed some.
    pub fn kv_publisher(&self) -> &KvPublisher {
        &self.publisher
    }

    /// The KV pool's counters after the last step.
    pub fn counters(&self) -> PoolCounters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many prompt tokens the model has computed since it started (prompt tokens found in
    /// a cache are not computed, and the choices of one request share one prompt).
    pub fn prefilled_tokens(&self) -> u64 {
        self.prefilled.load(Ordering::Relaxed)
    }

    /// How many times a running sequence was preempted (its blocks freed for another's decode
    /// step, its tokens computed again when it resumes) since the engine started.
    pub fn preemptions(&self) -> u64 {
        self.preemptions.load(Ordering::Relaxed)
    }

    /// Requests waiting to start: those in the queue and those the model thread holds until
    /// the KV cache or the running limit has room, preempted sequences among them (counted
    /// once a step).
    pub fn waiting_requests(&self) -> usize {
        self.queue.queued() + self.waiting.load(Ordering::Relaxed)
    }

    /// The lower tiers' counters (blocks and bytes offloaded and onboarded per tier, offloads
    /// dropped); `None` without lower tiers.
    pub fn offload_counters(&self) -> Option<OffloadCounters> {
        self.tiers.as_ref().map(LowerTiers::counters)
    }
}

impl Service<GenerateRequest> for CandleEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.queue.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        match (&request.disaggregation, &self.fetch) {
            (Disaggregation::Decode(handoff), Some(fetch)) => pull_then_queue(
                self.queue.clone(),
                Arc::clone(fetch),
                self.arrivals.clone(),
                handoff.clone(),
                request,
            ),
            _ => Box::pin(self.queue.call(request)),
        }
    }
}

struct ModelThread {
    weights: LlamaWeights,
    rope: Rope,
    store: KvStore,
    pool: BlockPool,
    config: CandleConfig,
    publisher: KvPublisher,
    counters: Arc<Mutex<PoolCounters>>,
    /// Waiting to start, in order: preempted sequences first.
    waiting: VecDeque<Waiting>,
    /// Running, in the order they started (the newest is preempted first).
    running: Vec<Sequence>,
    /// The tiers below the pool, if configured.
    tiers: Option<Tiers>,
    /// Blocks handed over by prefill workers and to decode workers.
    handoffs: Handoffs,
    /// The grammars of output formats.
    grammars: Grammars,
    /// Prompt tokens computed, for [`CandleEngine::prefilled_tokens`].
    prefilled: Arc<AtomicU64>,
    /// For [`CandleEngine::preemptions`].
    preemptions: Arc<AtomicU64>,
    /// `waiting.len()` after the last admission, for [`CandleEngine::waiting_requests`].
    waiting_count: Arc<AtomicUsize>,
}

impl ModelThread {
    fn new(
        weights: LlamaWeights,
        config: CandleConfig,
        publisher: KvPublisher,
        counters: Arc<Mutex<PoolCounters>>,
        arrivals: Arrivals,
    ) -> Self {
        let model = weights.config().clone();
        let block_size = config.block_size.get() as usize;
        let handoffs = Handoffs::new(config.export.clone(), arrivals, config.worker);
        let grammars = Grammars::new(
            weights.vocabulary.0.clone(),
            weights.vocab_size(),
            model.eos_token_id,
        );
        ModelThread {
            rope: Rope::new(model.head_dim, model.rope_theta, model.context_length),
            store: KvStore::new(&weights, config.blocks as usize, block_size),
            pool: BlockPool::new(config.blocks, config.block_size),
            weights,
            config,
            publisher,
            counters,
            waiting: VecDeque::new(),
            running: Vec::new(),
            tiers: None,
            handoffs,
            grammars,
            prefilled: Arc::default(),
            preemptions: Arc::default(),
            waiting_count: Arc::default(),
        }
    }

    fn block_size(&self) -> usize {
        self.config.block_size.get() as usize
    }

    fn run(mut self, mut submissions: mpsc::Receiver<Submission>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match submissions.blocking_recv() {
                    Some(submission) => self.waiting.push_back(Waiting::New(Box::new(submission))),
                    None => return,
                }
            }
            // Take only what can start now: the rest waits in the engine's bounded queue,
            // which is what makes the engine not ready when it is full.
            while self.running.len() + self.waiting.len() < self.config.max_running {
                let Ok(submission) = submissions.try_recv() else {
                    break;
                };
                self.waiting.push_back(Waiting::New(Box::new(submission)));
            }
            self.drop_cancelled();
            self.admit();
            self.waiting_count
                .store(self.waiting.len(), Ordering::Relaxed);
            if let Err(error) = self.step() {
                // A failed step leaves the store in an unknown state for its sequences: end them.
                let message = error.to_string();
                for mut sequence in std::mem::take(&mut self.running) {
                    let _ = sequence
                        .output
                        .try_send(Err(Error::internal(message.clone())));
                    sequence.release(&mut self.pool);
                }
                self.publish();
            }
        }
    }

    fn drop_cancelled(&mut self) {
        // Rebuilt only when a client has gone, not at every step.
        if self.waiting.iter().any(Waiting::is_cancelled) {
            let (cancelled, waiting): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.waiting)
                    .into_iter()
                    .partition(Waiting::is_cancelled);
            self.waiting = waiting;
            cancelled.into_iter().for_each(end_cancelled);
        }
        let (mut gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| s.is_gone());
        self.running = kept;
        for sequence in &mut gone {
            sequence.release(&mut self.pool);
        }
        if !gone.is_empty() {
            self.publish();
        }
        for sequence in gone {
            let _ = sequence
                .output
                .try_send(Ok(finish(&sequence, FinishReason::Cancelled)));
        }
    }

    /// One forward pass over every running sequence's next tokens.
    fn step(&mut self) -> Result<(), crate::CandleError> {
        let block_size = self.block_size();
        let mut rows = Vec::new();
        let mut want = Vec::new();
        let mut budget = self.config.max_step_tokens;
        let mut planned = vec![0; self.running.len()];
        let mut preempted = Vec::new();
        // Decoding sequences first (one token each), then prompt chunks with the budget left.
        let decoding = |s: &Sequence| s.tokens.len() - s.computed == 1;
        let order: Vec<usize> = (0..self.running.len())
            .filter(|&i| decoding(&self.running[i]))
            .chain((0..self.running.len()).filter(|&i| !decoding(&self.running[i])))
            .collect();
        for index in order {
            if preempted.contains(&index) {
                continue;
            }
            let sequence = &self.running[index];
            let pending = sequence.tokens.len() - sequence.computed;
            let take = pending.min(budget);
            if take == 0 {
                continue;
            }
            // A decode step may open a new block.
            let last = sequence.computed + take - 1;
            let held = sequence.pinned.len() + sequence.private.len();
            let opening = (last / block_size + 1).saturating_sub(held);
            let mut opened = Vec::new();
            if !self.make_room(index, opening, &mut opened, &mut preempted) {
                continue;
            }
            let sequence = &mut self.running[index];
            sequence.private.extend(opened);
            budget -= take;
            let prompt_rows = sequence
                .prompt_len
                .saturating_sub(sequence.computed)
                .min(take);
            self.prefilled
                .fetch_add(prompt_rows as u64, Ordering::Relaxed);
            for position in sequence.computed..sequence.computed + take {
                rows.push(Row {
                    token: sequence.tokens[position],
                    sequence: index,
                    position,
                });
                // A prompt row's logits give the next prompt token's log-probability.
                if sequence.wants_prompt_row(position) {
                    want.push(rows.len() - 1);
                }
            }
            if take == pending {
                want.push(rows.len() - 1);
            }
            planned[index] = take;
        }
        // The blocks just taken are written by the forward pass: offload what they held first.
        self.offload_evicted();
        let logits = if rows.is_empty() {
            Vec::new()
        } else {
            let tables: Vec<Vec<BlockId>> = self.running.iter().map(Sequence::table).collect();
            let tables: Vec<&[BlockId]> = tables.iter().map(Vec::as_slice).collect();
            forward(
                &self.weights,
                &self.rope,
                &mut self.store,
                &tables,
                &rows,
                &want,
                self.config.parallel_attention,
            )?
        };
        let mut per_sequence: Vec<Option<Vec<f32>>> = vec![None; self.running.len()];
        for (&row, row_logits) in want.iter().zip(logits) {
            let (sequence, position) = (rows[row].sequence, rows[row].position);
            let running = &mut self.running[sequence];
            if running.wants_prompt_row(position)
                && let Some(prompt) = &mut running.prompt_log_probs
            {
                prompt.take_in(&running.tokens, position, &row_logits);
            } else {
                per_sequence[sequence] = Some(row_logits);
            }
        }
        let most_tokens = self.most_tokens();
        let mut finished: Vec<(usize, Result<FinishReason, Error>)> = Vec::new();
        let mut forks = Vec::new();
        for (index, sequence) in self.running.iter_mut().enumerate() {
            let take = planned[index];
            if take == 0 {
                continue;
            }
            let before = sequence.computed / block_size;
            sequence.computed += take;
            for block in before..sequence.computed / block_size {
                let tokens = &sequence.tokens[block * block_size..(block + 1) * block_size];
                let parent = sequence.hashes.last().map(|h| h.sequence);
                let local = sequence.hasher.local_hash(tokens);
                let hashed = HashedBlock {
                    local,
                    sequence: SequenceHash::chain(parent, local),
                };
                let Some(private) = sequence.private.pop_front() else {
                    break;
                };
                sequence
                    .pinned
                    .push(self.pool.register(private, parent, hashed));
                sequence.hashes.push(hashed);
            }
            if sequence.computed < sequence.tokens.len() {
                continue;
            }
            let Some(mut row_logits) = per_sequence[index].take() else {
                continue;
            };
            if !sequence.send_prompt_log_probs() {
                finished.push((index, Ok(FinishReason::Cancelled)));
                continue;
            }
            if sequence.fork.is_some() {
                // The prompt is computed: the other choices start from the same logits.
                match fork(
                    sequence,
                    &mut self.pool,
                    &mut self.store,
                    &mut self.grammars,
                ) {
                    Ok(more) => forks.extend(more.into_iter().map(|f| (f, row_logits.clone()))),
                    Err(error) => {
                        finished.push((index, Err(error)));
                        continue;
                    }
                }
            }
            let outcome = advance(sequence, &mut row_logits, most_tokens);
            if let Some(outcome) = outcome.transpose() {
                finished.push((index, outcome));
            }
        }
        for (sequence, mut row_logits) in forks {
            self.running.push(sequence);
            let index = self.running.len() - 1;
            let sequence = &mut self.running[index];
            let outcome = advance(sequence, &mut row_logits, most_tokens);
            if let Some(outcome) = outcome.transpose() {
                finished.push((index, outcome));
            }
        }
        // Remove from the back, so that earlier indices stay valid and the rest keep their order.
        let mut leaving: Vec<(usize, Option<Result<FinishReason, Error>>)> = finished
            .into_iter()
            .map(|(index, outcome)| (index, Some(outcome)))
            .chain(preempted.into_iter().map(|index| (index, None)))
            .collect();
        leaving.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        let mut last_chunks = Vec::with_capacity(leaving.len());
        for (index, outcome) in leaving {
            let mut sequence = self.running.remove(index);
            let Some(outcome) = outcome else {
                // Back to the front of the queue, the oldest first.
                self.waiting
                    .push_front(Waiting::Preempted(Box::new(sequence)));
                continue;
            };
            let handoff = match outcome {
                Ok(FinishReason::Length) if sequence.hands_over && sequence.generated == 1 => self
                    .handoffs
                    .export(&sequence.hashes, &sequence.pinned, &self.store),
                _ => None,
            };
            sequence.release(&mut self.pool);
            last_chunks.push((
                outcome.map(|reason| TokenChunk {
                    kv_handoff: handoff,
                    ..finish(&sequence, reason)
                }),
                sequence.output,
            ));
        }
        // Events and counters first: a client that sees its answer end sees the cache too.
        self.publish();
        for (last, output) in last_chunks {
            let _ = output.try_send(last);
        }
        Ok(())
    }

    /// The most tokens a sequence reaches (its prompt's and its output's): the model's context
    /// or what the KV cache holds, whichever is less, as vLLM's `max_model_len`. A sequence
    /// alone in the cache can then always grow to its end.
    fn most_tokens(&self) -> usize {
        let cache = self.config.blocks as usize * self.block_size();
        self.rope.positions().min(cache)
    }

    /// Offload the blocks the pool evicted since the last call to the lower tiers, if any.
    fn offload_evicted(&mut self) {
        if let Some(tiers) = &mut self.tiers {
            tiers.offload_evicted(&mut self.pool, &self.store);
        }
    }

    /// Onboard the prompt blocks of `request` after the first `cached` of `hashes` (those
    /// `pinned` holds) into the first of `private`, from the lower tiers and then from the
    /// blocks handed over to it, and register them: they move from `private` to the end of
    /// `pinned`. How many.
    fn onboard(
        &mut self,
        request: &RequestId,
        cached: usize,
        hashes: &[HashedBlock],
        pinned: &mut Vec<PinnedBlock>,
        private: &mut Vec<PrivateBlock>,
    ) -> usize {
        let blocks = &hashes[cached..];
        let from_tiers = match &mut self.tiers {
            Some(tiers) => tiers.onboard(blocks, private, &mut self.store),
            None => 0,
        };
        let handed_over = self.handoffs.onboard(
            request,
            cached + from_tiers,
            &blocks[from_tiers..],
            &private[from_tiers..],
            &mut self.store,
        );
        let onboarded = from_tiers + handed_over;
        let mut parent = cached.checked_sub(1).map(|last| hashes[last].sequence);
        for (block, filled) in blocks[..onboarded].iter().zip(private.drain(..onboarded)) {
            pinned.push(self.pool.register(filled, parent, *block));
            parent = Some(block.sequence);
        }
        onboarded
    }

    /// Send the pool's events, the lower tiers' and the counters.
    fn publish(&mut self) {
        self.publisher
            .publish_all(StorageTier::Device, self.pool.take_events());
        if let Some(tiers) = &self.tiers {
            tiers.publish(&self.publisher);
        }
        let counters = self.pool.counters();
        let offload = self.tiers.as_ref().map(|tiers| tiers.lower().counters());
        dynamo_kvbm::metrics::record(&counters, offload.as_ref());
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner) = counters;
    }
}
