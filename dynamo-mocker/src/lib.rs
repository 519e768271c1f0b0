//! A simulated LLM engine and a virtual-clock trace replay, for evaluating routing offline.
//!
//! [`SimWorker`] behaves like one vLLM worker as far as routing is concerned: a waiting and a
//! running queue, one token budget per step spent on running sequences first and then on
//! waiting ones (chunked prefill), a cap on running sequences, a paged KV cache with prefix
//! caching and least-recently-released eviction, preemption by recompute when blocks run
//! out, and the step-time model of NVIDIA Dynamo's mocker ([`PolynomialTiming`], or
//! [`InterpolatedTiming`] from a profiling table). Its cache is `dynamo-kvbm`'s block pool;
//! below it, an optional host tier ([`HostTierConfig`], Dynamo's `native_host_offload` model)
//! and disk tier ([`DiskTierConfig`]) keep blocks for onboarding, with copy times. It emits the
//! KV events a real engine would, tagged with their tier, so the router's real index can follow
//! it.
//!
//! - [`Replay`] drives N workers with a Mooncake-format trace ([`load_mooncake`]) through any
//!   [`Router`](dynamo_router::Router), on a virtual clock, and summarises what users would
//!   have seen ([`Summary`], with NVIDIA Dynamo's field names). The `dynamo-replay` command
//!   wraps it; `docs/simulator.md` compares it with Dynamo's own replay. With
//!   [`ReplayConfig::disagg`] the workers form a prefill and a decode pool, with a KV hand-over
//!   between them and a placement policy per request ([`DisaggConfig`]; the per-phase figures
//!   are in [`DisaggSummary`]); `docs/disaggregation.md` compares it with Dynamo's
//!   disaggregated replay.
//! - With [`Replay::planner`], a [`dynamo_planner::Planner`] sizes the pool as the replay
//!   goes: each planning interval of virtual time it observes the interval and its decision is
//!   played out with a start-up delay for new workers and a graceful drain for removed ones
//!   ([`PlannerReplayConfig`]); the summary reports the SLA attainment ([`Sla`]), the
//!   worker-hours and GPU-hours, and the replica timeline ([`ReplicaPoint`]).
//!   [`profile_engine`] measures the performance profile the planner's SLA policies plan
//!   from. `docs/planner.md` has the design and the figures. Azure CSV traces read with [`load_azure`].
//! - [`generate`] writes seeded synthetic traces in chosen [`SharingPattern`]s (short or long
//!   conversations, a hot system prompt, shared documents, no sharing), to judge routers on
//!   more than one trace (`dynamo-replay generate`).
//! - [`LiveEngine`] runs one worker as an [`Engine`](dynamo_core::Engine) that streams tokens
//!   in scaled real time, to stand in for a GPU behind a router or a gateway.
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
//! # Replaying a trace
//!
//! ```
//! use dynamo_core::BlockSize;
//! use dynamo_mocker::{CacheKnowledge, Replay, ReplayConfig, TraceRequest};
//! use dynamo_router::{KvCost, SharedIndex};
//!
//! // Two requests that share their first 512-token trace block.
//! let trace = vec![
//!     TraceRequest { timestamp: 0.0, input_length: 1024, output_length: 4, hash_ids: vec![1, 2] },
//!     TraceRequest { timestamp: 500.0, input_length: 1024, output_length: 4, hash_ids: vec![1, 3] },
//! ];
//! let config = ReplayConfig { workers: 2, ..ReplayConfig::default() };
//! let index = SharedIndex::new(BlockSize::new(64)?);
//! let outcome = Replay::new(&trace, &config)
//!     .label("kv")
//!     .policy(KvCost::default())
//!     .knowledge(CacheKnowledge::Events(index))
//!     .run()?;
//! assert_eq!(outcome.summary.completed_requests, 2);
//! // The second request went where the first one's blocks were cached.
//! assert_eq!(outcome.records[1].worker, outcome.records[0].worker);
//! assert_eq!(outcome.records[1].cached_tokens, 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Speed
//!
//! On a 2-core AMD EPYC VM, the replay of the shared Mooncake trace (3,993 requests, 8 workers
//! of 16,384 blocks) takes a median 73 ms with round-robin and 92 ms with the KV router,
//! against 888 ms and 1,211 ms for NVIDIA Dynamo 1.6.1's replay in the same session: 12.2× and
//! 13.1× (measured 2026-12-03), with round-robin results within a percent of Dynamo's. The cost grows linearly
//! with the trace.
//! `docs/simulator.md` has the tables and what the speed comes from.
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `cli` | the `dynamo-replay` command (clap for its flags, indicatif for its progress bars); the library needs neither | yes |

mod engine;
mod error;
mod host;
mod live;
mod phases;
mod profile;
mod replay;
mod summary;
mod timing;
mod trace;
mod workload;

pub use engine::{
    EngineConfig, HandedOverKv, LowerTierHit, SimRequest, SimWorker, StepReport, WorkerMetrics,
};
pub use error::Error;
pub use host::{DiskTierConfig, HostTierConfig};
pub use live::{LiveConfig, LiveEngine};
pub use phases::{DisaggSummary, Spread};
pub use profile::{ProfileSweep, profile_engine};
pub use replay::{
    CacheKnowledge, DisaggConfig, MembershipChange, PlannerReplayConfig, Replay, ReplayConfig,
    ReplayOutcome, ReplicaPoint, RouterReplicas, Sla, TransferConfig,
};
pub use summary::{RequestRecord, Summary};
pub use timing::{InterpolatedTiming, PolynomialTiming, StepShape, StepTiming, TimingModel};
pub use trace::{TraceRequest, engine_blocks, load_azure, load_mooncake, load_trace};
pub use workload::{SharingPattern, TRACE_BLOCK_TOKENS, WorkloadConfig, generate, write_mooncake};
