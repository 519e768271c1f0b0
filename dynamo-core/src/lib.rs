//! The shared vocabulary of the dynamo crates.
//!
//! `dynamo-core` defines the types every other dynamo crate speaks, and does no I/O of its own:
//!
//! - **Tokens and blocks**: [`Tokens`] (a cheaply shared, sliceable prompt), [`BlockSize`], and
//!   the block hashing scheme of NVIDIA Dynamo's router ([`BlockHasher`], [`LocalBlockHash`],
//!   [`SequenceHash`]), one-shot or [incremental](IncrementalHasher) for decode.
//! - **Requests and responses**: [`GenerateRequest`] with its sampling options, stop conditions,
//!   output limits and routing hints; [`TokenStream`], a stream of [`TokenChunk`]s that cancels
//!   the work when dropped.
//! - **KV events**: [`KvEvent`]s that engines publish about the blocks they hold, so a router can
//!   send each request where its prefix is already cached; a [`KvPublisher`] stamps them and
//!   answers a [`ResyncRequest`] with a snapshot when a consumer missed some.
//! - **Engines**: the [`Engine`] abstraction, a [`tower::Service`] from request to token stream,
//!   with a boxed form ([`BoxEngine`]), the common calls ([`EngineExt`]) and an [`EchoEngine`] for
//!   tests and docs; [`QueuedEngine`], the bounded queue in front of an engine's worker, whose
//!   readiness is real capacity.
//! - **Embeddings**: the [`Embedder`] abstraction, a [`tower::Service`] from token sequences
//!   ([`EmbedRequest`]) to one vector each ([`Embeddings`]), with a boxed form
//!   ([`BoxEmbedder`]).
//! - **Disaggregated serving**: a worker's [`WorkerRole`], the [`KvLayout`] two workers must
//!   share to exchange KV blocks, and the [`KvHandoff`] a prefill worker gives a decode worker
//!   ([`Disaggregation`] says which phase a request asks for).
//! - **Errors**: one [`Error`] type whose variants fall into a closed set of [`ErrorClass`]es
//!   with stable names; [`Error::from_boxed`] brings tower layers' errors (load shedding,
//!   timeouts) back into it.
//! - **Resilience and metering**: tower [`layers`] any engine can wear: retries with a budget
//!   before the first token, per-request deadlines, a circuit breaker per worker, and a traffic
//!   meter whose reports a planner reads.
//!
//! # Example
//!
//! Hash a prompt into blocks, then stream it through the echo engine:
//!
//! ```
//! use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dynamo_core::Error> {
//! let request = GenerateRequest::new("req-1", "echo", (0..130).collect::<Vec<u32>>())
//!     .with_max_tokens(3);
//!
//! // Two full blocks of 64 tokens; the last 2 tokens do not fill a block and are not hashed.
//! let blocks = request.block_hasher(BlockSize::new(64)?).hash_blocks(&request.tokens);
//! assert_eq!(blocks.len(), 2);
//! assert_eq!(blocks[1].sequence.0, 0x23bd5ef232e90ecb);
//!
//! let mut stream = EchoEngine::new().generate(request).await?;
//! let mut echoed = Vec::new();
//! while let Some(chunk) = stream.next().await {
//!     echoed.extend(chunk?.tokens);
//! }
//! assert_eq!(echoed, [0, 1, 2]);
//! # Ok(())
//! # }
//! ```
//!
//! # Cancellation
//!
//! Every [`GenerateRequest`] carries a [`CancellationToken`](tokio_util::sync::CancellationToken).
//! Engines watch a child of it; cancelling the request's token stops the work, and dropping the
//! [`TokenStream`] stops the one attempt it belongs to.
//!
//! # Features
//!
//! `dynamo-core` has no optional features.

mod disagg;
mod echo;
mod embed;
mod engine;
mod error;
mod events;
mod format;
mod hash;
mod incremental;
pub mod layers;
mod publisher;
mod queue;
mod replica;
mod request;
mod response;
mod stream;
mod tokens;

pub use disagg::{Disaggregation, KvHandoff, KvLayout, LayoutMismatch, WorkerRole};
pub use echo::EchoEngine;
pub use embed::{BoxEmbedder, EmbedRequest, Embedder, Embeddings};
pub use engine::{BoxEngine, Engine, EngineExt};
pub use error::{BoxError, Error, ErrorClass, Result};
pub use events::{KvEvent, KvEventData, ResyncRequest, StorageTier, WorkerId};
pub use format::OutputFormat;
pub use hash::{BASE_SEED, BlockHasher, HashedBlock, LocalBlockHash, SequenceHash};
pub use incremental::IncrementalHasher;
pub use publisher::KvPublisher;
pub use queue::{QueuedEngine, Submission};
pub use replica::{ReplicaId, ReplicaMessage, ReplicaUpdate, SharedBooking};
pub use request::{
    Delivery, GenerateRequest, OutputLimits, RequestId, RoutingHints, SamplingOptions,
    StopConditions,
};
pub use response::{FinishReason, Generation, TokenChunk, TokenLogProb, Usage};
pub use stream::TokenStream;
pub use tokens::{BlockSize, Token, Tokens};
