//! Embeddable LLM inference orchestration for Rust.
//!
//! `dynamo` turns a set of inference engine workers into one serving system, built from small
//! crates that compose with [tower]. Today that is KV-cache-aware routing, disaggregated
//! prefill and decode, an OpenAI-compatible frontend, engines reached across processes, a
//! multi-tier KV block manager, an SLA-driven autoscaling planner, a reference engine and an
//! engine simulator. This facade re-exports part of the family; depend on a single member crate
//! when that is all you need.
//!
//! | crate | what it holds | status |
//! |---|---|---|
//! | [`dynamo-core`](dynamo_core) | tokens, block hashing, requests, token streams, KV events, the [`Engine`] abstraction, errors | available, re-exported at the root |
//! | `dynamo-router` | the KV prefix index, load tracking, routing policies, the router as a tower `Service`, and the disaggregated router over a prefill and a decode pool | available, as `dynamo::router` with the `router` feature |
//! | `dynamo-mocker` | a simulated vLLM-like engine and the virtual-clock trace replay | available, as `dynamo::mocker` with the `mocker` feature |
//! | `dynamo-openai` | the OpenAI-compatible HTTP gateway over any engine | available as its own crate, not re-exported |
//! | `dynamo-transport` | engines across processes (in-process and TCP transports), KV events over NATS, discovery | available as its own crate, not re-exported |
//! | `dynamo-candle` | a reference engine running llama-family GGUF models on candle | available as its own crate, not re-exported |
//! | `dynamo-kvbm` | the KV block manager: block pool, host, disk and object-store tiers, and the data plane that hands KV blocks from prefill to decode workers | available as its own crate, not re-exported |
//! | `dynamo-upstream`, `dynamo-vllm`, `dynamo-sglang`, `dynamo-trtllm` | engines over other servers' HTTP APIs: any OpenAI-compatible server, vLLM, SGLang and TensorRT-LLM | available as their own crates, not re-exported |
//! | `dynamo-planner` | an SLA-driven autoscaling planner: load predictors, performance profiles, planning policies, the `Scaler` trait with local-process and Kubernetes scalers | available as its own crate, not re-exported |
//!
//! # Example
//!
//! ```
//! use dynamo::{BlockSize, EchoEngine, EngineExt, GenerateRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dynamo::Error> {
//! let request = GenerateRequest::new("req-1", "echo", (0..200).collect::<Vec<u32>>());
//! let blocks = request.block_hasher(BlockSize::new(64)?).hash_blocks(&request.tokens);
//! assert_eq!(blocks.len(), 3);
//!
//! let generation = EchoEngine::new().generate_all(request.with_max_tokens(8)).await?;
//! assert_eq!(generation.tokens.len(), 8);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | enables | default |
//! |---|---|---|
//! | — | `dynamo-core` is always included | — |
//! | `router` | `dynamo::router`, the `dynamo-router` crate | no |
//! | `mocker` | `dynamo::mocker`, the `dynamo-mocker` crate | no |
//!
//! [tower]: https://docs.rs/tower

pub use dynamo_core::*;

/// KV-cache-aware routing: the `dynamo-router` crate.
#[cfg(feature = "router")]
pub use dynamo_router as router;

/// The simulated engine and the trace replay: the `dynamo-mocker` crate.
#[cfg(feature = "mocker")]
pub use dynamo_mocker as mocker;
