//! KV-cache-aware routing for LLM inference.
//!
//! (Crate docs are completed as the router's parts land.)

mod index;

pub use index::{
    IndexError, IndexSnapshot, KvIndex, Overlaps, ResyncHook, SharedIndex, TierOverlap,
    WorkerSnapshot,
};
