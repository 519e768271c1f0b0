//! A reference LLM engine on [candle](https://github.com/huggingface/candle): it runs a
//! llama-family GGUF model (SmolLM2-135M-Instruct in our tests and demo) on the CPU (the `cuda`
//! feature moves its matrix products to an NVIDIA GPU; not yet run on one), behind the same
//! [`Engine`](dynamo_core::Engine) interface as every other engine, so that the gateway, the
//! router and the KV events see a real model.
//!
//! - **Many requests per worker.** Requests queue in a bounded
//!   [`QueuedEngine`](dynamo_core::QueuedEngine): while it is full the engine is not ready
//!   (`poll_ready` is `Pending`), so tower's load shedding and concurrency limits see its real
//!   capacity. One model thread runs every running sequence in each step: prompt chunks and
//!   decode tokens share the step's matrix products. The async runtime is never blocked.
//! - **Paged KV cache with prefix caching.** K and V live in blocks of `block_size` tokens
//!   outside candle ([`KvStore`]); a request whose prompt starts with cached blocks reuses them
//!   and computes only the rest. Unreferenced cached blocks are evicted least recently released
//!   first. Every block filled is announced with a `Stored` KV event (the core block hashing),
//!   every eviction with `Removed`, so the KV router sees the real cache; a router that missed
//!   some asks for a snapshot, which [`CandleEngine::kv_publisher`] sends.
//! - **Preemption by recompute.** When a decode step needs a block and the cache has none to give,
//!   the newest running sequence frees its blocks and waits at the front of the queue; it starts
//!   again as a prompt of its tokens so far (what is still cached is reused) and goes on sampling
//!   where it stopped, as vLLM does. A sequence ends with `Length` at the model's context or at
//!   what the cache holds, whichever is less; [`CandleEngine::preemptions`] counts them.
//! - **Host and disk tiers.** With [`CandleConfig::host_blocks`] and [`CandleConfig::disk`],
//!   a block evicted from the cache keeps its bytes in host memory, and what that tier evicts
//!   goes to a file on disk in the background (through a bounded queue that drops offloads when
//!   full). A prompt that continues past the cached prefix onboards the next blocks from them
//!   instead of computing them; every tier change is a KV event tagged with its tier, and
//!   [`CandleEngine::offload_counters`] counts the traffic.
//! - **Disaggregated serving.** With [`CandleConfig::export`] a prefill-phase request
//!   (`Disaggregation::Prefill`) offers its prompt's full blocks to a
//!   [`KvExports`](dynamo_kvbm::KvExports) when it ends and names them in the last chunk's
//!   hand-over; with [`CandleConfig::fetch`] a decode-phase request pulls them (in process, or
//!   over TCP from the prefill worker's block server) before it is queued, onboards them as
//!   prefix-cache hits and computes only the tokens after the last full block. Greedy answers
//!   are token for token the aggregated ones (`tests/disaggregated.rs`).
//! - **Sampling**, in vLLM's order: the repetition penalty (prompt and output tokens),
//!   frequency and presence penalties (output tokens) on the logits, then greedy, or
//!   temperature with min-p, top-k and top-p, seeded; stop tokens (and the model's EOS unless
//!   `ignore_eos`), `min_tokens`, `max_tokens`; dropping the stream frees the sequence's blocks
//!   at the next step.
//! - **Log-probabilities** of each sampled token and its alternatives (the raw distribution's),
//!   and of the prompt's tokens: a request for those computes its whole prompt (no cached
//!   prefix), keeps every prompt row's logits, and sends them in one chunk before its first
//!   token.
//! - **Output formats.** A request with a [`format`](dynamo_core::GenerateRequest::format) (a
//!   JSON object, JSON valid against a JSON schema, text matching a regular expression, one of
//!   a list of texts, or text of a Lark grammar) is held to it while sampling by
//!   [llguidance](https://docs.rs/llguidance): each step masks the tokens that would leave the
//!   format before sampling and log-probabilities, each sampled token advances the grammar, and
//!   the sequence stops (`Stop`) as soon as the format is complete. The grammar engine reads the
//!   token bytes from the GGUF tokenizer metadata and builds its tables on the first such
//!   request; a format it cannot compile is an invalid request naming its field
//!   (`response_format` or `structured_outputs.…`).
//!
//! ```no_run
//! use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
//! use dynamo_core::{EngineExt, GenerateRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let weights = LlamaWeights::load("SmolLM2-135M-Instruct.Q4_1.gguf", &candle_core::Device::Cpu)?;
//! let mut engine = CandleEngine::start(weights, CandleConfig::default(), None)?;
//! let request = GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198]).with_max_tokens(8);
//! let generation = engine.generate_all(request).await?;
//! tracing::info!("{:?}", generation.tokens);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `cuda` | candle's CUDA backend: the matrix products on an NVIDIA GPU (`Device::new_cuda`), while the KV store and attention stay on the CPU; needs `nvcc` and `CUDA_COMPUTE_CAP` at build time; not built in CI nor run on a GPU yet, see `docs/engines.md` | no |

mod config;
mod embed;
mod engine;
mod engine_config;
mod error;
mod fork;
mod forward;
mod grammar;
mod handoff;
mod logprobs;
mod sampler;
mod sequence;
mod tiers;
mod vocab;
mod weights;

pub use config::LlamaConfig;
pub use dynamo_kvbm::{OffloadCounters, PoolCounters, TierTraffic};
pub use embed::{BertEmbedder, EmbedderConfig};
pub use engine::CandleEngine;
pub use engine_config::CandleConfig;
pub use error::CandleError;
pub use forward::KvStore;
pub use handoff::KvExport;
pub use tiers::DiskTier;
pub use weights::LlamaWeights;
