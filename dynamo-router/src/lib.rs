//! KV-cache-aware routing for LLM inference.
//!
//! A router sends each request to the worker that already caches the longest part of its
//! prompt, without piling every request that shares a hot prefix onto one worker. This crate
//! holds its parts; `docs/router.md` explains the design and the measured figures.
//!
//! - [`KvIndex`]: which worker caches which blocks, fed by [`KvEvent`](dynamo_core::KvEvent)s;
//!   answers "how deep does each worker's cached prefix go" for a request's block hashes, split
//!   by storage tier. [`SharedIndex`] shares one index between the event task and the routing
//!   tasks.
//! - [`LoadTracker`]: per-worker load (active requests, prefill tokens, decode blocks), booked
//!   before dispatch and released by a [`LoadGuard`] when the request ends, however it ends.
//!
//! Routing policies and the router as a tower `Service` are being built next (see the README's
//! crate table).
//!
//! # Example
//!
//! ```
//! use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
//! use dynamo_router::{Booking, LoadTracker, SharedIndex};
//!
//! let block_size = BlockSize::new(4)?;
//! let hasher = BlockHasher::new(block_size);
//! let index = SharedIndex::new(block_size);
//! let load = LoadTracker::new();
//!
//! // Worker 2 reports that it cached a 12-token prompt.
//! let prompt: Vec<u32> = (100..112).collect();
//! index.apply(&KvEvent {
//!     worker: WorkerId::new(2),
//!     event_id: 0,
//!     tier: StorageTier::Device,
//!     data: KvEventData::Stored { parent: None, block_size, blocks: hasher.hash_blocks(&prompt) },
//! })?;
//!
//! // A new request that repeats the prompt: hash it once, ask the index, book the load.
//! let hashes = hasher.sequence_hashes(&prompt);
//! let overlaps = index.overlaps(&hashes);
//! let (best, overlap) = overlaps.iter().max_by_key(|(_, o)| o.total()).expect("one worker");
//! assert_eq!((best, overlap.device), (WorkerId::new(2), 3));
//! let uncached = prompt.len() as u64 - u64::from(overlap.total()) * 4;
//! let guard = load.book(best, Booking { blocks: hashes, prefill_tokens: uncached, expected_output_tokens: 0 });
//! assert_eq!(load.load(best).active_requests, 1);
//! drop(guard);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! `dynamo-router` has no optional features yet.

mod affinity;
mod approx;
mod busy;
mod index;
mod load;
mod policy;
mod queue;
mod selector;
mod service;
mod source;

pub use affinity::AffinityConfig;
pub use approx::{ApproxConfig, ApproxIndex};
pub use busy::BusyThresholds;
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
