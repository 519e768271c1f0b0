//! Routing policies: a pure decision over a snapshot of worker states.
//!
//! A [`Router`] sees the request's blocks and, for every eligible worker, its cached prefix,
//! the prefix its in-flight requests are computing, and its booked load. It answers with a
//! [`Decision`]; the caller ([`WorkerSelector`](crate::WorkerSelector)) does the bookkeeping.

mod balance;
mod batch;
mod choose;
mod expected_ttft;
mod kv_cost;
mod request_costs;

use std::sync::Arc;

use dynamo_core::{BlockSize, SequenceHash, WorkerId};

use crate::index::TierOverlap;
use crate::load::WorkerLoad;

pub use balance::{LeastLoaded, PowerOfTwoChoices, Random, RoundRobin};
pub use expected_ttft::{ExpectedTtft, ExpectedTtftConfig, PrefillTimeModel};
pub use kv_cost::{KvCost, KvCostConfig, TierCredits};

/// What a policy knows of the request being routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// The sequence hashes of the prompt's full blocks.
    pub blocks: &'a [SequenceHash],
    /// The prompt's length in tokens (including a partial last block).
    pub prompt_tokens: u64,
    /// The block size of the hashes.
    pub block_size: BlockSize,
    /// The expected number of output tokens, from the request's hints.
    pub expected_output_tokens: Option<u32>,
}

impl RouteContext<'_> {
    /// The prompt's length in blocks, counting a partial last block as a fraction.
    pub fn prompt_blocks(&self) -> f64 {
        self.prompt_tokens as f64 / f64::from(self.block_size.get())
    }
}

/// One eligible worker, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerState {
    /// The worker.
    pub worker: WorkerId,
    /// The leading blocks of the prompt the worker caches, by tier (from KV events, or
    /// predicted in approximate mode).
    pub cached: TierOverlap,
    /// The leading blocks of the prompt that requests active on the worker hold now. They are
    /// being computed there, so they will be cached before the engine's events say so.
    pub in_flight: u32,
    /// The load booked on the worker.
    pub load: WorkerLoad,
}

impl WorkerState {
    /// The KV blocks the worker's active requests would hold with `request` added: its active
    /// decode blocks, the prompt blocks no active request holds yet, and one for the request's
    /// partial tail and output (blocks shared by concurrent requests count once).
    #[inline]
    pub fn decode_blocks_with(&self, request: &RouteContext<'_>) -> u64 {
        let shared = (self.in_flight as usize).min(request.blocks.len());
        self.load.active_decode_blocks + (request.blocks.len() - shared) as u64 + 1
    }
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to this worker.
    Route(WorkerId),
    /// No worker should take it now: wait in the router's queue.
    Queue,
    /// Refuse it: the system is over capacity.
    Overloaded,
}

/// A routing policy: chooses a worker for a request from a snapshot of the eligible workers.
///
/// Policies are pure decisions: they book nothing and call nothing. They receive only workers
/// that are not busy (see [`BusyThresholds`](crate::BusyThresholds)), sorted by id, and never an
/// empty list. A policy keeps what state it needs (a round-robin cursor, a random generator)
/// behind `&self`, since one router serves many tasks.
///
/// ```
/// use dynamo_core::WorkerId;
/// use dynamo_router::{Decision, RouteContext, Router, WorkerState};
///
/// /// Always the worker with the lowest id: a policy in five lines.
/// #[derive(Debug)]
/// struct First;
///
/// impl Router for First {
///     fn route(&self, _request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
///         workers.first().map_or(Decision::Queue, |w| Decision::Route(w.worker))
///     }
/// }
/// ```
pub trait Router: std::fmt::Debug + Send + Sync + 'static {
    /// Choose a worker among `workers` for `request`.
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision;

    /// Whether the policy reads the workers' cached prefixes ([`WorkerState::cached`]).
    /// Default `true`. A policy that answers `false` ([`RoundRobin`], [`Random`]) has no
    /// predictions recorded for it in approximate mode ([`ApproxIndex`](crate::ApproxIndex)),
    /// which only its decisions would read.
    fn reads_overlaps(&self) -> bool {
        true
    }
}

impl<R: Router + ?Sized> Router for Arc<R> {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        (**self).route(request, workers)
    }

    fn reads_overlaps(&self) -> bool {
        (**self).reads_overlaps()
    }
}

impl<R: Router + ?Sized> Router for Box<R> {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        (**self).route(request, workers)
    }

    fn reads_overlaps(&self) -> bool {
        (**self).reads_overlaps()
    }
}
