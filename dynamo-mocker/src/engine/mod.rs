//! One simulated worker: a vLLM-like scheduler over a paged, prefix-cached KV pool, with
//! optional host and disk tiers below it.
//!
//! [`SimWorker::step`] runs one engine step and says how long it took; the caller (the
//! virtual-clock replay, or a live engine that sleeps) advances time. The worker's own clock
//! ([`SimWorker::set_time`]) matters only to its lower tiers, whose copies take time.

mod admit;
mod report;
mod tiers;

use std::collections::VecDeque;

use dynamo_core::{BlockSize, HashedBlock, LocalBlockHash, SequenceHash};
use dynamo_kvbm::{BlockPool, PinnedBlock, PrivateBlock};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::host::{DiskTierConfig, HostTier, HostTierConfig};
use crate::timing::{StepShape, StepTiming};
use tiers::Onboarding;

pub use report::{HandedOverKv, LowerTierHit, SimRequest, StepReport, WorkerMetrics};

/// The settings of a simulated worker; the defaults are those of NVIDIA Dynamo's mocker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// KV blocks in the cache. Default 16,384.
    pub num_gpu_blocks: u64,
    /// Tokens per KV block. Default 64.
    pub block_size: BlockSize,
    /// The token budget of one step. Default 8,192.
    pub max_num_batched_tokens: u64,
    /// The most sequences running at once. Default 256.
    pub max_num_seqs: usize,
    /// A host-memory tier below the device cache. Default none.
    pub host: Option<HostTierConfig>,
    /// A local disk tier below the host tier (ignored without one). Default none.
    pub disk: Option<DiskTierConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            num_gpu_blocks: 16_384,
            block_size: BlockSize::new(64).unwrap_or_else(|_| unreachable!("64 is not zero")),
            max_num_batched_tokens: 8_192,
            max_num_seqs: 256,
            host: None,
            disk: None,
        }
    }
}

#[derive(Debug)]
struct Sequence {
    request: SimRequest,
    /// Full blocks of prompt and output, as far as they are known.
    blocks: Vec<HashedBlock>,
    /// The leading blocks of `blocks` that this sequence has registered or pinned.
    pinned: Vec<PinnedBlock>,
    /// Private blocks held.
    private: Vec<PrivateBlock>,
    /// Tokens whose KV is computed.
    computed: u64,
    /// Tokens generated so far.
    generated: u64,
    /// Prompt tokens found in the cache at the first admission.
    cached_tokens: Option<u64>,
    /// Prompt blocks copied to the host tier so far.
    host_cursor: usize,
    /// While onboarding from the lower tiers: when the copy ends, and the prefix found in each
    /// tier.
    onboarding: Option<Onboarding>,
    /// The prompt's KV was computed elsewhere and handed over
    /// ([`SimWorker::add_transferred_request`]): it is never computed here.
    handed_over: Option<HandedOverKv>,
    /// Leading prompt blocks whose KV another worker sent before the first admission
    /// ([`SimWorker::add_request_with_prefix`]): not computed here, cached after.
    pulled: usize,
}

impl Sequence {
    fn tokens(&self) -> u64 {
        self.request.prompt_tokens + self.generated
    }

    /// Whether the sequence must (re)compute tokens before it can decode.
    fn prefilling(&self) -> bool {
        self.computed < self.tokens()
    }
}

/// One simulated engine worker.
#[derive(Debug)]
pub struct SimWorker {
    config: EngineConfig,
    timing: Box<dyn StepTiming>,
    pool: BlockPool,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    /// The prompt tokens each finished or running request found cached, by id.
    cached: Vec<(u64, u64)>,
    /// The part of those that came from the lower tiers (requests with some only).
    lower_tier_hits: Vec<LowerTierHit>,
    host: Option<HostTier>,
    /// Requests waiting for their prefix to be copied from the lower tiers.
    onboarding: Vec<Sequence>,
    /// The worker's clock: the start of the next step, in ms.
    now_ms: f64,
    /// The step's plan, kept to reuse its allocation: (index in `running`, tokens).
    plan: Vec<(usize, u64)>,
    /// The cached prefix found at an admission, kept to reuse its allocation.
    found: Vec<dynamo_kvbm::BlockId>,
    /// Indices in `running` of the sequences that produced their last token this step.
    done: Vec<usize>,
    record_tokens: bool,
    /// Quiet steps run since the running sequences were last brought up to date: steps in
    /// which every running sequence decoded one token and none filled a block or finished.
    quiet_steps: u64,
    /// How many more steps are certain to be quiet.
    quiet_ahead: u64,
    /// The running sequences' tokens when they were last brought up to date.
    quiet_tokens: u64,
    /// Sequences preempted since the worker started.
    preemptions: u64,
}

impl SimWorker {
    /// An idle worker with an empty cache.
    pub fn new(config: EngineConfig, timing: impl StepTiming + 'static) -> Self {
        SimWorker {
            // Four billion blocks is as good as an unbounded cache; the pool grows as it fills.
            pool: BlockPool::new(
                u32::try_from(config.num_gpu_blocks).unwrap_or(u32::MAX),
                config.block_size,
            ),
            config,
            timing: Box::new(timing),
            waiting: VecDeque::new(),
            running: Vec::new(),
            cached: Vec::new(),
            lower_tier_hits: Vec::new(),
            host: config
                .host
                .filter(|host| host.blocks > 0)
                .map(|host| HostTier::new(&host, config.disk.as_ref(), config.block_size)),
            onboarding: Vec::new(),
            now_ms: 0.0,
            plan: Vec::new(),
            found: Vec::new(),
            done: Vec::new(),
            record_tokens: false,
            quiet_steps: 0,
            quiet_ahead: 0,
            quiet_tokens: 0,
            preemptions: 0,
        }
    }

    /// List in each report the requests that produced a token (off by default: a replay needs
    /// only first tokens and completions, and a list per step costs time).
    pub fn record_tokens(mut self, record: bool) -> Self {
        self.record_tokens = record;
        self
    }

    /// Report the cache's KV events (on by default). Off, the worker skips building them: for
    /// replays whose router does not read them.
    pub fn record_events(mut self, record: bool) -> Self {
        self.pool.record_events(record);
        self
    }

    /// Queue a request.
    pub fn add_request(&mut self, request: SimRequest) {
        self.queue(request, None, 0);
    }

    /// Queue a request whose prompt's KV another worker computed and handed over, as a
    /// disaggregated decode worker receives it (NVIDIA Dynamo's mocker does the same).
    ///
    /// Admitted, it takes blocks for its whole prompt and decodes at once: its first step
    /// samples its first token at the cost of a decode step. `kv` says whether those blocks
    /// are its cache's ([`HandedOverKv`]). It computes nothing of its prompt, even after a
    /// preemption, and reports no cache hit ([`SimWorker::drain_cache_hits`]): the worker
    /// that computed the prompt reports its own.
    pub fn add_transferred_request(&mut self, request: SimRequest, kv: HandedOverKv) {
        self.queue(request, Some(kv), 0);
    }

    /// Queue a request whose first `pulled_blocks` prompt blocks another worker computed and
    /// sent here (a decode worker's cached prefix pulled by a prefill worker): at its first
    /// admission they count as cached, in fresh blocks that this worker's cache then keeps, and
    /// it computes only the rest (at least one token). A preempted request recomputes them.
    pub fn add_request_with_prefix(&mut self, request: SimRequest, pulled_blocks: usize) {
        self.queue(request, None, pulled_blocks);
    }

    fn queue(&mut self, mut request: SimRequest, handed_over: Option<HandedOverKv>, pulled: usize) {
        // The next step may admit it: it is not quiet.
        self.quiet_ahead = 0;
        self.waiting.push_back(Sequence {
            handed_over,
            blocks: std::mem::take(&mut request.prompt_blocks),
            request,
            pinned: Vec::new(),
            private: Vec::new(),
            computed: 0,
            generated: 0,
            cached_tokens: None,
            host_cursor: 0,
            onboarding: None,
            pulled,
        });
    }

    /// Drop a request wherever it is, releasing its blocks (its registered blocks stay cached).
    /// `false` when the worker does not have it.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.catch_up();
        self.quiet_ahead = 0;
        if let Some(index) = self.waiting.iter().position(|s| s.request.id == id)
            && let Some(mut sequence) = self.waiting.remove(index)
        {
            self.release(&mut sequence);
            return true;
        }
        if let Some(index) = self.onboarding.iter().position(|s| s.request.id == id) {
            let mut sequence = self.onboarding.swap_remove(index);
            self.release(&mut sequence);
            return true;
        }
        let Some(index) = self.running.iter().position(|s| s.request.id == id) else {
            return false;
        };
        let mut sequence = self.running.remove(index);
        self.release(&mut sequence);
        true
    }

    /// Whether the worker has anything to do.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.onboarding.is_empty()
    }

    /// Set the worker's clock to `now_ms`, the start of its next step. A driver with a clock of
    /// its own (a replay) sets it before each step; otherwise the clock advances by each step's
    /// duration. It matters only with a host tier, whose copies take time.
    pub fn set_time(&mut self, now_ms: f64) {
        self.now_ms = now_ms;
    }

    /// The worker's clock: the start of its next step, in ms.
    pub fn now_ms(&self) -> f64 {
        self.now_ms
    }

    /// When a worker that has nothing to run now has something again: the end of the first
    /// copy from the host tier it waits for. `None` if it waits for nothing.
    pub fn next_wake_ms(&self) -> Option<f64> {
        self.onboarding
            .iter()
            .filter_map(|s| s.onboarding.map(|onboarding| onboarding.done_ms))
            .min_by(f64::total_cmp)
    }

    /// The worker's load.
    pub fn metrics(&self) -> WorkerMetrics {
        WorkerMetrics {
            waiting: self.waiting.len() + self.onboarding.len(),
            running: self.running.len(),
            blocks_in_use: self.pool.in_use() as u64,
            blocks_total: self.pool.capacity() as u64,
            preemptions: self.preemptions,
        }
    }

    /// Whether [`drain_cache_hits`](Self::drain_cache_hits) has anything.
    pub(crate) fn has_cache_hits(&self) -> bool {
        !self.cached.is_empty()
    }

    /// The prompt tokens that requests found in the lower tiers at their first admission (part
    /// of [`SimWorker::drain_cache_hits`]), drained; requests that found none are not listed.
    pub fn drain_lower_tier_hits(&mut self) -> Vec<LowerTierHit> {
        std::mem::take(&mut self.lower_tier_hits)
    }

    /// The prompt tokens each request found cached at its first admission, drained.
    pub fn drain_cache_hits(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.cached)
    }

    /// Run one step: schedule, then apply its work. `None` when there is nothing to do.
    pub fn step(&mut self) -> Option<StepReport> {
        let mut report = StepReport::default();
        self.step_into(&mut report).then_some(report)
    }

    /// [`SimWorker::step`] into a report whose allocations are reused; `false` (and an empty
    /// report) when there is nothing to do.
    pub fn step_into(&mut self, report: &mut StepReport) -> bool {
        report.clear();
        if !self.onboarding.is_empty() {
            self.finish_onboarding();
        }
        if self.waiting.is_empty() && self.running.is_empty() {
            return false;
        }
        if self.quiet_ahead > 0 {
            self.quiet_step(report);
            return true;
        }
        self.catch_up();
        let mut budget = self.config.max_num_batched_tokens;
        let mut plan = std::mem::take(&mut self.plan);
        plan.clear();
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let sequence = &self.running[i];
            // A prefilling sequence computes a chunk; a decoding one appends one token.
            let (chunk, needed) = if sequence.prefilling() {
                let chunk = (sequence.tokens() - sequence.computed).min(budget);
                (chunk, sequence.computed + chunk)
            } else {
                (1, sequence.tokens() + 1)
            };
            if self.ensure_blocks(i, needed, report) {
                plan.push((i, chunk));
                budget -= chunk;
                i += 1;
            }
            // Otherwise the sequence itself was preempted: `running[i]` is the next one.
        }
        // As in vLLM, a step that had to preempt admits nothing new, unless nothing runs.
        if report.preempted.is_empty() || plan.is_empty() {
            self.admit(&mut budget, &mut plan);
        }
        if plan.is_empty() {
            self.plan = plan;
            if !self.onboarding.is_empty() {
                // The cache is held by onboarding requests: wait for them.
                return false;
            }
            // Nothing runs and the first waiting request cannot be admitted into an empty
            // cache: it needs more blocks than the cache has.
            return self.reject_unservable(report);
        }
        // Decode slows with the tokens the decoding sequences attend to, as a share of the
        // cache's token capacity.
        let mut shape = StepShape::default();
        let mut decode_tokens = 0;
        for &(index, chunk) in &plan {
            let sequence = &self.running[index];
            if sequence.prefilling() {
                shape.prefill_tokens += chunk;
            } else {
                shape.decode_sequences += 1;
                decode_tokens += sequence.tokens();
            }
        }
        shape.kv_usage = self.kv_usage(decode_tokens);
        report.prefill_tokens = shape.prefill_tokens;
        report.duration_ms = self.timing.step_ms(&shape);
        for &(index, chunk) in &plan {
            self.advance(index, chunk, report);
        }
        let end_ms = self.now_ms + report.duration_ms;
        self.copy_to_host(&plan, end_ms);
        self.plan = plan;
        self.finish(report);
        self.pool.take_events_into(&mut report.events);
        if let Some(host) = &mut self.host {
            host.take_events_into(&mut report.tier_events);
        }
        self.now_ms = end_ms;
        self.plan_quiet_steps();
        true
    }

    /// A step in which every running sequence decodes one token and nothing else happens:
    /// counted, not applied to each sequence (see [`SimWorker::catch_up`]).
    fn quiet_step(&mut self, report: &mut StepReport) {
        report.duration_ms = self.quiet_step_ms();
        self.now_ms += report.duration_ms;
        if self.record_tokens {
            report
                .produced
                .extend(self.running.iter().map(|s| s.request.id));
        }
    }

    /// Count one quiet step; its duration.
    fn quiet_step_ms(&mut self) -> f64 {
        let sequences = self.running.len() as u64;
        let tokens = self.quiet_tokens + sequences * self.quiet_steps;
        let shape = StepShape {
            prefill_tokens: 0,
            decode_sequences: sequences as u32,
            kv_usage: self.kv_usage(tokens),
        };
        self.quiet_steps += 1;
        self.quiet_ahead -= 1;
        self.timing.step_ms(&shape)
    }

    /// Run the next step if it is certain to be quiet and to report nothing (tokens are not
    /// recorded); its duration. Equivalent to [`SimWorker::step_into`] with an uneventful
    /// report, without the report.
    pub(crate) fn run_quiet_step(&mut self) -> Option<f64> {
        (self.quiet_ahead > 0 && !self.record_tokens).then(|| self.quiet_step_ms())
    }

    /// Take back the last `steps` quiet steps, as if they had not run: a request arrived
    /// before they would have started.
    pub(crate) fn undo_quiet_steps(&mut self, steps: u64) {
        let steps = steps.min(self.quiet_steps);
        self.quiet_steps -= steps;
        self.quiet_ahead += steps;
    }

    /// `tokens` as a share of the cache's token capacity: what slows a decode step.
    fn kv_usage(&self, tokens: u64) -> f64 {
        let capacity = self.pool.capacity() as u64 * u64::from(self.config.block_size.get());
        tokens as f64 / capacity.max(1) as f64
    }

    /// Apply the quiet steps to every running sequence.
    fn catch_up(&mut self) {
        if self.quiet_steps > 0 {
            for sequence in &mut self.running {
                sequence.generated += self.quiet_steps;
                sequence.computed = sequence.tokens();
            }
            self.quiet_steps = 0;
        }
    }

    /// After a full step: how many of the next steps are certain to be quiet. None if a
    /// request waits or a sequence prefills; otherwise until the first sequence needs a new
    /// block, fills one, or finishes.
    fn plan_quiet_steps(&mut self) {
        let block = u64::from(self.config.block_size.get());
        let sequences = self.running.len() as u64;
        self.quiet_ahead = 0;
        if !self.waiting.is_empty()
            || !self.onboarding.is_empty()
            || sequences > self.config.max_num_batched_tokens
        {
            return;
        }
        let mut ahead = u64::MAX;
        let mut tokens = 0;
        for sequence in &self.running {
            if sequence.prefilling() {
                return;
            }
            let room = (sequence.pinned.len() + sequence.private.len()) as u64 * block;
            let to_full = room.saturating_sub(sequence.tokens() + 1);
            let to_last = sequence
                .request
                .output_tokens
                .saturating_sub(sequence.generated + 1);
            ahead = ahead.min(to_full).min(to_last);
            tokens += sequence.tokens();
        }
        self.quiet_ahead = if sequences == 0 { 0 } else { ahead };
        self.quiet_tokens = tokens;
    }

    /// Make sure `running[index]` holds blocks for `tokens` tokens, preempting the newest
    /// running sequences while blocks are short. `false` when `running[index]` itself was
    /// preempted.
    fn ensure_blocks(&mut self, index: usize, tokens: u64, report: &mut StepReport) -> bool {
        let block = u64::from(self.config.block_size.get());
        loop {
            let sequence = &self.running[index];
            let held = (sequence.pinned.len() + sequence.private.len()) as u64;
            if tokens <= held * block {
                // The usual decode step: the last block has room.
                return true;
            }
            let needed = tokens.div_ceil(block) - held;
            if self
                .pool
                .take(needed as usize, &mut self.running[index].private)
            {
                return true;
            }
            let victim = self.running.len() - 1;
            self.preempt(victim, report);
            if victim == index {
                return false;
            }
        }
    }

    /// Free a running sequence's blocks and send it back to the front of the queue; it will
    /// recompute what it had (from the cache where it can).
    fn preempt(&mut self, index: usize, report: &mut StepReport) {
        let mut sequence = self.running.remove(index);
        self.release(&mut sequence);
        sequence.computed = 0;
        self.preemptions += 1;
        report.preempted.push(sequence.request.id);
        self.waiting.push_front(sequence);
    }

    fn release(&mut self, sequence: &mut Sequence) {
        self.pool.release(&mut sequence.pinned);
        self.pool.release(&mut sequence.private);
    }

    /// Apply a step's work to `running[index]`.
    fn advance(&mut self, index: usize, chunk: u64, report: &mut StepReport) {
        let block = u64::from(self.config.block_size.get());
        let sequence = &mut self.running[index];
        let id = sequence.request.id;
        if sequence.prefilling() {
            sequence.computed += chunk;
            if sequence.prefilling() {
                self.register_full(index);
                return;
            }
        }
        // The prefill is done (here, or on the worker that handed the prompt over): this step
        // samples a token.
        if sequence.generated == 0 {
            report.first_tokens.push(id);
        }
        if self.record_tokens {
            report.produced.push(id);
        }
        let sequence = &mut self.running[index];
        sequence.generated += 1;
        sequence.computed = sequence.tokens();
        if sequence.generated >= sequence.request.output_tokens {
            self.done.push(index);
        }
        // Output tokens fill blocks whose content is this request's own.
        while (sequence.blocks.len() as u64 + 1) * block <= sequence.tokens() {
            let position = sequence.blocks.len() as u64;
            let local = LocalBlockHash(output_block_hash(position, id));
            let parent = sequence.blocks.last().map(|b| b.sequence);
            sequence.blocks.push(HashedBlock {
                local,
                sequence: SequenceHash::chain(parent, local),
            });
        }
        self.register_full(index);
    }

    /// Register the sequence's newly full blocks.
    fn register_full(&mut self, index: usize) {
        let block = u64::from(self.config.block_size.get());
        let sequence = &mut self.running[index];
        if sequence.handed_over == Some(HandedOverKv::Discarded) {
            // Its blocks are never the cache's.
            return;
        }
        if sequence.private.is_empty() || sequence.pinned.len() >= sequence.blocks.len() {
            // No block filled since the last call.
            return;
        }
        let full = ((sequence.computed / block) as usize).min(sequence.blocks.len());
        if let Some(filled) = sequence.blocks.get(sequence.pinned.len()..full) {
            self.pool.warm_registrations(filled);
        }
        while sequence.pinned.len() < full {
            let Some(private) = sequence.private.pop() else {
                break;
            };
            let next = sequence.pinned.len();
            let parent = next.checked_sub(1).map(|p| sequence.blocks[p].sequence);
            let pinned = self.pool.register(private, parent, sequence.blocks[next]);
            sequence.pinned.push(pinned);
        }
    }

    /// Release the sequences that produced their last token.
    fn finish(&mut self, report: &mut StepReport) {
        // Highest index first, so that removing one leaves the others' indices valid.
        let mut done = std::mem::take(&mut self.done);
        done.sort_unstable_by(|a, b| b.cmp(a));
        for index in done.drain(..) {
            let mut sequence = self.running.remove(index);
            self.release(&mut sequence);
            report.finished.push(sequence.request.id);
        }
        report.finished.reverse();
        self.done = done;
    }

    /// The first waiting request needs more blocks than the whole cache: drop it as finished
    /// with nothing produced, so the simulation goes on, and say so in the report.
    fn reject_unservable(&mut self, report: &mut StepReport) -> bool {
        let Some(sequence) = self.waiting.pop_front() else {
            return false;
        };
        report.finished.push(sequence.request.id);
        true
    }
}

/// The content hash of the output block at `position` of request `request`: the position with
/// a tag of its own, so that it never equals a prompt block's hash
/// ([`engine_blocks`](crate::engine_blocks) hashes a position within a trace hash id, seeded by
/// that id). Without the tag, a request numbered `n` whose prompt fills no block would store its
/// first output block under the hash of trace hash id `n`'s first prompt block.
fn output_block_hash(position: u64, request: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&position.to_le_bytes());
    bytes[8..].copy_from_slice(b"output\0\0");
    xxh3_64_with_seed(&bytes, request)
}

#[cfg(test)]
mod tests {
    use dynamo_core::BlockSize;

    use super::output_block_hash;
    use crate::{TraceRequest, engine_blocks};

    #[test]
    fn output_blocks_never_take_a_prompt_blocks_hash() {
        let block_size = BlockSize::new(64).expect("non-zero");
        for id in [0, 1, 4, 261, u64::MAX] {
            // Trace hash id `id`'s prompt blocks, against request `id`'s output blocks.
            let prompt = TraceRequest {
                timestamp: 0.0,
                input_length: 512,
                output_length: 1,
                hash_ids: vec![id],
            };
            let blocks = engine_blocks(&prompt, 512, block_size).expect("512 is 8 blocks of 64");
            for (position, block) in blocks.iter().enumerate() {
                assert_ne!(
                    block.local.0,
                    output_block_hash(position as u64, id),
                    "{id}"
                );
            }
        }
    }
}
