//! What goes in and out of a simulated worker: requests, step reports, metrics.

use dynamo_core::{HashedBlock, KvEventData, StorageTier};

/// What a worker does with the KV of a prompt handed over to it
/// ([`SimWorker::add_transferred_request`](super::SimWorker::add_transferred_request)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HandedOverKv {
    /// Fresh blocks for the whole prompt, freed when the request ends: no later request finds
    /// them. NVIDIA Dynamo's mocker behaves so: its decode workers report no cache hit for a
    /// handed-over prompt, even one handed over before.
    #[default]
    Discarded,
    /// The blocks the cache holds are pinned, the others registered once they arrive: they
    /// stay in the prefix cache for later requests, as vLLM's prefix cache keeps blocks loaded
    /// by a KV connector.
    Cached,
}

/// A request as the simulated engine sees it: the hashes of its prompt's full blocks and its
/// lengths; the tokens themselves do not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRequest {
    /// An id unique on the worker.
    pub id: u64,
    /// The prompt's full blocks, hashed as the router hashes them.
    pub prompt_blocks: Vec<HashedBlock>,
    /// The prompt's length in tokens (at least the full blocks' tokens).
    pub prompt_tokens: u64,
    /// The number of tokens to generate, at least 1.
    pub output_tokens: u64,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// How long the step took, in ms.
    pub duration_ms: f64,
    /// Requests whose first token the step produced.
    pub first_tokens: Vec<u64>,
    /// Requests that produced a token (first ones included), when the worker records them
    /// ([`SimWorker::record_tokens`](super::SimWorker::record_tokens)).
    pub produced: Vec<u64>,
    /// Requests that finished; their blocks are released.
    pub finished: Vec<u64>,
    /// Device cache changes, in order.
    pub events: Vec<KvEventData>,
    /// Host and disk tier cache changes, in order (after the device's of the same step).
    pub tier_events: Vec<(StorageTier, KvEventData)>,
    /// Prompt tokens computed (cache hits excluded).
    pub prefill_tokens: u64,
    /// Requests preempted (their KV freed, to be recomputed).
    pub preempted: Vec<u64>,
}

/// The load of a worker, as an engine's metrics would report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerMetrics {
    /// Requests waiting to be scheduled.
    pub waiting: usize,
    /// Requests scheduled (prefilling or decoding).
    pub running: usize,
    /// KV blocks held by requests.
    pub blocks_in_use: u64,
    /// KV blocks in the cache.
    pub blocks_total: u64,
    /// Sequences preempted since the worker started (their KV freed, to be recomputed), as
    /// vLLM's `vllm:num_preemptions` counts them.
    pub preemptions: u64,
}

/// The prompt tokens a request found in the lower tiers at its first admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowerTierHit {
    /// The request.
    pub id: u64,
    /// Tokens onboarded from host memory.
    pub host_tokens: u64,
    /// Tokens onboarded from disk.
    pub disk_tokens: u64,
}

impl StepReport {
    /// Whether the step changed nothing a caller records: no first token, completion,
    /// preemption or KV event (tokens produced aside).
    pub(crate) fn is_uneventful(&self) -> bool {
        self.first_tokens.is_empty()
            && self.finished.is_empty()
            && self.preempted.is_empty()
            && self.events.is_empty()
            && self.tier_events.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.duration_ms = 0.0;
        self.first_tokens.clear();
        self.produced.clear();
        self.finished.clear();
        self.events.clear();
        self.tier_events.clear();
        self.prefill_tokens = 0;
        self.preempted.clear();
    }
}
