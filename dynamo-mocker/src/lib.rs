//! A simulated LLM engine and a virtual-clock trace replay, for evaluating routing offline.
//!
//! [`SimWorker`] behaves like one vLLM worker as far as routing is concerned: a waiting and a
//! running queue, one token budget per step spent on running sequences first and then on
//! waiting ones (chunked prefill), a cap on running sequences, a paged KV cache with prefix
//! caching and least-recently-released eviction, preemption by recompute when blocks run
//! out, and the step-time model of NVIDIA Dynamo's mocker ([`PolynomialTiming`]). It emits the
//! KV events a real engine would, so the router's real index can follow it.
//!
//! # Example
//!
//! ```
//! use dynamo_core::{BlockHasher, BlockSize};
//! use dynamo_mocker::{EngineConfig, PolynomialTiming, SimRequest, SimWorker};
//!
//! let config = EngineConfig::default();
//! let mut worker = SimWorker::new(config, PolynomialTiming::default());
//! let prompt: Vec<u32> = (0..1000).collect();
//! worker.add_request(SimRequest {
//!     id: 1,
//!     prompt_blocks: BlockHasher::new(config.block_size).hash_blocks(&prompt),
//!     prompt_tokens: 1000,
//!     output_tokens: 3,
//! });
//! // The first step prefills the whole prompt and samples the first token.
//! let first = worker.step().expect("work to do");
//! assert_eq!(first.first_tokens, [1]);
//! assert_eq!(first.prefill_tokens, 1000);
//! // Two decode steps later the request is done.
//! worker.step();
//! assert_eq!(worker.step().map(|s| s.finished), Some(vec![1]));
//! assert!(worker.is_idle());
//! ```
//!
//! # Features
//!
//! `dynamo-mocker` has no optional features.

mod engine;
mod live;
mod pool;
mod replay;
mod summary;
mod timing;
mod trace;

pub use engine::{EngineConfig, SimRequest, SimWorker, StepReport, WorkerMetrics};
pub use live::{LiveConfig, LiveEngine};
pub use replay::{
    CacheKnowledge, MembershipChange, ReplayConfig, ReplayOutcome, WorkerChange, replay,
    replay_with_progress,
};
pub use summary::{RequestRecord, Summary};
pub use timing::{InterpolatedTiming, PolynomialTiming, StepShape, StepTiming, TimingTableError};
pub use trace::{TraceError, TraceRequest, engine_blocks, load_mooncake};
