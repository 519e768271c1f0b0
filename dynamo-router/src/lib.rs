//! KV-cache-aware routing for LLM inference.
//!
//! A router sends each request to the worker that already caches the longest part of its
//! prompt, without piling every request that shares a hot prefix onto one worker. This crate is
//! that router, in parts you can use alone or together; `docs/router.md` explains the design and
//! the measured figures.
//!
//! | layer | what it does |
//! |---|---|
//! | [`RouterService`] | a tower `Service` (and so an [`Engine`](dynamo_core::Engine)) in front of a changing set of worker engines: hashes each prompt once, picks a worker, books its load, dispatches, streams the tokens back, releases the load |
//! | [`WorkerSelector`] | the same decision without I/O: snapshot, policy, booking in one step; what a simulator or your own dispatcher calls |
//! | [`Router`] policies | [`ExpectedTtft`] (ours, the default), [`KvCost`] (NVIDIA Dynamo's cost, the baseline), [`RoundRobin`], [`Random`], [`PowerOfTwoChoices`], [`LeastLoaded`] |
//! | cache knowledge ([`OverlapSource`]) | [`SharedIndex`] over a [`KvIndex`], fed by the engines' [`KvEvent`](dynamo_core::KvEvent)s; or [`ApproxIndex`], which predicts caches from the router's own decisions when engines publish no events |
//! | load | [`LoadTracker`]: active requests, prefill tokens (released at the first token), decode blocks (shared prompt blocks counted once), booked before dispatch and released by a [`LoadGuard`] however the request ends |
//! | admission | [`BusyThresholds`] mark workers busy; while all are, requests wait in a bounded [`WaitQueue`] ([`QueueOrder::Fcfs`] or [`QueueOrder::ShortestUncachedFirst`]); when it is full too the service is not ready, and a call made anyway is refused as overloaded; [`AffinityConfig`] keeps a session on one worker |
//!
//! # Example: a router in front of workers
//!
//! Workers here are echo engines; in production they are remote engines from a transport, or
//! local models. KV events from the workers go into the [`SharedIndex`].
//!
//! ```
//! use dynamo_core::{
//!     BlockHasher, BlockSize, EchoEngine, EngineExt, GenerateRequest, KvEvent, KvEventData,
//!     StorageTier, WorkerId,
//! };
//! use dynamo_router::{KvCost, RouterService, SharedIndex};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let block_size = BlockSize::new(4)?;
//! let index = SharedIndex::new(block_size);
//! let router = RouterService::builder(block_size)
//!     .policy(KvCost::default())
//!     .kv_events(index.clone())
//!     .build();
//! for id in 1..=3 {
//!     router.insert_worker(WorkerId::new(id), EchoEngine::new());
//! }
//!
//! // Worker 2 reports (through whatever event plane you use) that it cached this prompt.
//! let prompt: Vec<u32> = (100..116).collect();
//! index.apply(&KvEvent {
//!     worker: WorkerId::new(2),
//!     event_id: 0,
//!     tier: StorageTier::Device,
//!     data: KvEventData::Stored {
//!         parent: None,
//!         block_size,
//!         blocks: BlockHasher::new(block_size).hash_blocks(&prompt),
//!     },
//! })?;
//!
//! // A request that repeats it goes to worker 2; the load is booked while it streams.
//! let request = GenerateRequest::new("r1", "model", prompt).with_max_tokens(2);
//! let mut stream = router.clone().generate(request).await?;
//! assert_eq!(router.selector().load().load(WorkerId::new(2)).active_requests, 1);
//! while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
//!     chunk?;
//! }
//! assert_eq!(router.selector().load().load(WorkerId::new(2)).active_requests, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Embedding it in your service
//!
//! `RouterService` is a cheap, cloneable handle: keep one in your application state and call it
//! from your handlers, behind any tower layers you already use (timeouts, rate limits). Its
//! readiness is its capacity: `poll_ready` is pending while every worker is busy and the wait
//! queue is full, so tower's `LoadShed` refuses at once and `ConcurrencyLimit` composes
//! (map their boxed errors back with [`Error::from_boxed`](dynamo_core::Error::from_boxed);
//! `tests/router_backpressure.rs` shows the stack). Feed membership from your discovery with
//! [`RouterService::insert_worker`] and [`RouterService::remove_worker`], or spawn the future of
//! [`RouterService::discover`] over a `tower::discover::Discover` stream (`dynamo-transport`'s
//! `discovery::connect` yields one); a removed worker's cache knowledge is kept for
//! [`RouterBuilder::forget_after`] in case it comes back. Map [`Error`](dynamo_core::Error)
//! classes to your protocol's statuses: `overloaded` (no capacity: shed, or the wait queue is
//! full) to 503 with `Retry-After`, `unavailable` (no worker) to 503, `invalid_request` to 400.
//! The facade crate's example `router_http` is a complete axum app that maps them this way
//! (`cargo run --example router_http --features router`).
//!
//! A handler needs nothing more than this:
//!
//! ```
//! use dynamo_core::{EngineExt, Error, GenerateRequest};
//! use dynamo_router::RouterService;
//!
//! /// Route one prompt and collect the answer's tokens.
//! async fn complete(router: &RouterService, id: String, prompt: Vec<u32>) -> Result<Vec<u32>, Error> {
//!     let request = GenerateRequest::new(id, "model", prompt).with_max_tokens(64);
//!     Ok(router.clone().generate_all(request).await?.tokens)
//! }
//! ```
//!
//! # Choosing a policy
//!
//! [`ExpectedTtft`] estimates each worker's time to first token from its queued prefill work
//! and the request's uncached tokens, and credits prefixes that in-flight requests are
//! computing, which the engines' events do not report yet; [`KvCost`] is the incumbent's cost
//! in blocks, kept as the baseline. Both take a temperature for softmax sampling and a seed for
//! reproducible runs. The cache-blind policies are for comparison and for engines without
//! prefix caching. Write your own by implementing [`Router`]: one method, a pure decision.
//!
//! # Disaggregated serving
//!
//! [`disagg::DisaggRouter`] puts two routers behind one Engine: a prefill pool and a decode
//! pool. A request books a decode worker, and a [`disagg::PlacementPolicy`] decides whether a
//! free prefill worker computes its prompt (the prefill worker streams the first token and
//! hands the prompt's KV blocks over; the decode worker continues from there) or the decode
//! worker does. Five policies ship: NVIDIA Dynamo's behaviour ([`disagg::AlwaysRemote`]), its
//! conditional rule ([`disagg::Threshold`]) and ours: [`disagg::ExpectedTtftPlacement`] (with
//! `prefill_workers_decode`, an idle prefill worker may serve a whole request),
//! [`disagg::RouterCostPlacement`] (each request whole on the candidate the router's cost
//! prefers) and [`disagg::StallFreePlacement`] (no prompt joins running decodes). A request
//! never fails for disaggregation: without a free prefill worker, or when the prefill fails,
//! the decode worker computes the prompt.
//!
//! # Request migration
//!
//! [`migrate::Migrate`] (or [`migrate::MigrateLayer`]) wraps any Engine, a router above all:
//! when a worker fails mid-stream (its connection lost, an `unavailable` error, a stream that
//! ends without a finish reason), the request continues through the router on another worker,
//! with the tokens already streamed appended to its prompt. The client sees one stream, no
//! token twice and none missing, with one request's usage; after
//! [`migrate::MigrationConfig::limit`] migrations the stream ends with an `unavailable` error
//! whose source is a [`migrate::MigrationExhausted`].
//!
//! # Worker health
//!
//! A worker that hangs without closing its connection is caught by the router itself: an
//! attempt that produces no chunk for the stall timeout ([`RouterBuilder::stall_timeout`],
//! 30 s by default; first token and between tokens) ends with an `unavailable` error whose
//! source is a [`health::Stalled`], so [`migrate::Migrate`] continues the request elsewhere, and
//! the worker is ejected from routing (so is one whose attempts fail with `unavailable` three
//! times in a row). Spawn the future of [`RouterService::health_checks`]: it sends ejected
//! workers a one-token canary each probe interval and brings back those that answer, and
//! probes idle workers so that one that hangs while idle is ejected before a client finds it.
//! A cap on the share of workers ejected at once
//! ([`HealthConfig::max_ejected_percent`]) keeps an overload from ejecting them all.
//! [`HealthConfig`] holds the settings; [`health`] explains them.
//!
//! # Router replicas
//!
//! Several router replicas behind a load balancer each see only their own traffic. A
//! [`replicas::ReplicaState`] shares what each one books (and, in approximate mode, predicts)
//! with the others: give its [`load`](replicas::ReplicaState::load) tracker to the router
//! ([`RouterBuilder::load_tracker`]), publish the messages it queues on your event plane and
//! apply the others' (`dynamo-transport`'s `events::exchange_replica_messages` carries them
//! over NATS, and `dynamo-serve`'s frontend does all of it). The messages are
//! bounded and loss tolerant: digests repair lost messages, remote bookings expire, and a
//! replica that joins catches up from a snapshot.
//!
//! # Concurrency
//!
//! The index is a reader-writer lock around one [`KvIndex`] ([`SharedIndex`]): lookups share
//! the read lock, event batches take the write lock once. A routing decision (snapshot, policy,
//! booking) holds the selector's mutex for a few microseconds, so that two requests never
//! decide on the same load. The crate has no lock-free structures, hence no loom models; a
//! stress test runs readers against a writer.
//!
//! # Features
//!
//! `dynamo-router` has no optional features.

mod affinity;
mod approx;
mod busy;
pub mod disagg;
pub mod health;
mod index;
mod load;
pub mod migrate;
mod policy;
mod queue;
pub mod replicas;
mod selector;
mod service;
mod source;
#[cfg(test)]
mod test_rng;

pub use affinity::AffinityConfig;
pub use approx::{ApproxConfig, ApproxIndex};
pub use busy::BusyThresholds;
pub use health::HealthConfig;
pub use index::{
    IndexError, IndexSnapshot, KvIndex, Overlaps, ResyncHook, SharedIndex, TierOverlap,
    WorkerSnapshot,
};
pub use load::{Booking, LoadGuard, LoadTracker, WorkerLoad};
pub use policy::{
    Decision, ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, LeastLoaded,
    PowerOfTwoChoices, PrefillTimeModel, Random, RoundRobin, RouteContext, Router, TierCredits,
    WorkerState,
};
pub use queue::{QueueFull, QueueOrder, QueuePosition, WaitQueue};
pub use selector::{NotRouted, RouteRequest, Routed, SelectorConfig, WorkerSelector};
pub use service::{RouterBuilder, RouterService};
pub use source::OverlapSource;
