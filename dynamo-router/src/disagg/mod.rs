//! Disaggregated prefill and decode: [`DisaggRouter`] runs a request's prefill on one pool of
//! workers and its decode on another, and a [`PlacementPolicy`] decides per request whether
//! splitting pays.

mod placement;
mod router_cost;
mod service;
mod stall_free;

pub use placement::{
    AlwaysRemote, BookedWorker, ExpectedTtftPlacement, Placement, PlacementContext,
    PlacementPolicy, PrefillCandidate, Threshold,
};
pub use router_cost::{Candidates, RouterCostPlacement, Unbooked, draw};
pub use service::{BlockSizeMismatch, DisaggRouter};
pub use stall_free::StallFreePlacement;
