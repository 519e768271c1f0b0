//! Disaggregated prefill and decode: which requests to split, and (planned in this module) the
//! service that runs the prefill on one pool and the decode on another.

mod placement;

pub use placement::{
    AlwaysRemote, ExpectedTtftPlacement, Placement, PlacementContext, PlacementPolicy,
    PrefillCandidate, Threshold,
};
