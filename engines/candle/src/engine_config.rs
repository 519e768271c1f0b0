//! How a [`CandleEngine`](crate::CandleEngine) runs: its cache, batch and queue sizes, its
//! lower tiers and its part in disaggregated serving.

use std::sync::Arc;

use dynamo_core::{BlockSize, WorkerId};
use dynamo_kvbm::KvFetch;

use crate::handoff::KvExport;
use crate::tiers::DiskTier;

/// How a [`CandleEngine`](crate::CandleEngine) runs.
#[derive(Debug, Clone)]
pub struct CandleConfig {
    /// KV blocks (each holds `block_size` tokens of K and V for every layer). A sequence's
    /// prompt and output together end at `blocks × block_size` tokens when that is less than
    /// the model's context (finish reason `Length`).
    pub blocks: u32,
    /// Tokens per KV block; also the block size of the KV events.
    pub block_size: BlockSize,
    /// Tokens one step may run (prefill chunks and decode rows together).
    pub max_step_tokens: usize,
    /// Sequences running at once; more wait in the queue.
    pub max_running: usize,
    /// Requests waiting to start; while that many wait, the engine is not ready.
    pub queue_capacity: usize,
    /// Run attention (each row's and head's scores over its sequence's KV blocks) across
    /// rayon's thread pool, the one candle's matrix products use, rather than on the model
    /// thread alone. Default `true`.
    pub parallel_attention: bool,
    /// The worker id KV events carry.
    pub worker: WorkerId,
    /// Blocks of a host-memory tier below the KV cache (0: none). A block evicted from the
    /// cache is copied there, and a request whose prompt continues past the cached prefix
    /// onboards the next blocks from there instead of computing them. Each block takes
    /// `2 × block_size × layers × kv_heads × head_dim × 4` bytes (720 KiB for SmolLM2-135M
    /// with 16-token blocks).
    pub host_blocks: u32,
    /// A disk tier below the host tier (below the cache itself without one): what the host
    /// tier evicts is written there in the background, through a bounded queue that drops
    /// offloads when full (see [`CandleEngine::offload_counters`](crate::CandleEngine::offload_counters)).
    pub disk: Option<DiskTier>,
    /// Disaggregated serving, prefill side: where a
    /// [`Disaggregation::Prefill`](dynamo_core::Disaggregation::Prefill) request leaves its
    /// prompt's full blocks for the decode worker. Without it such a request runs as usual and
    /// its stream ends without a hand-over (the decode worker then computes the prompt).
    pub export: Option<KvExport>,
    /// Disaggregated serving, decode side: how a
    /// [`Disaggregation::Decode`](dynamo_core::Disaggregation::Decode) request pulls the blocks
    /// its hand-over names (for example a [`KvFetcher`](dynamo_kvbm::KvFetcher)). The pull runs
    /// before the request is queued, while the model thread goes on with other work; without
    /// it, or when the pull fails, the worker computes the prompt itself.
    pub fetch: Option<Arc<dyn KvFetch>>,
}

impl Default for CandleConfig {
    fn default() -> Self {
        CandleConfig {
            blocks: 512,
            block_size: BlockSize::new(16).unwrap_or_else(|_| unreachable!("16 is not zero")),
            max_step_tokens: 512,
            max_running: 16,
            queue_capacity: 256,
            parallel_attention: true,
            worker: WorkerId::new(0),
            host_blocks: 0,
            disk: None,
            export: None,
            fetch: None,
        }
    }
}
