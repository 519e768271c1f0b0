//! SLA-driven autoscaling: watch the load, predict the next interval, turn the TTFT and ITL
//! targets into replica counts for each worker pool, and ask a [`Scaler`] for them.
//!
//! One planning step ([`Planner::tick`]) takes an [`Observation`] of the interval that just
//! ended and the pools' current sizes, and returns a [`Decision`]: the replica counts it
//! wants and why. What reads the metrics and what acts on the decision are the caller's: the
//! trace replay (`dynamo-replay --planner`) drives it on its virtual clock, and a live
//! deployment drives it with a [`Scaler`].

mod error;
mod observe;
mod plan;
pub mod perf;
pub mod policy;
pub mod predict;
mod scaler;

pub use error::Error;
pub use observe::{Observation, WorkerLoad};
pub use plan::{Bounds, Decision, Planner, PlannerConfig, Replicas};
pub use scaler::{PoolSize, Scaler};
