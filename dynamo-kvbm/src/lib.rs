//! A multi-tier KV cache block manager.
//!
//! (Front page in progress.)

mod error;
mod eviction;
mod pool;
mod store;
mod tier;

pub use error::Error;
pub use eviction::{AdmissionFilter, AdmitAll, EvictionPolicy, LeavesFirst, Lru, SeenTwice};
pub use pool::{
    BlockId, BlockPool, Evicted, Held, HeldBlock, PinnedBlock, PoolCounters, PrivateBlock,
};
pub use store::BlockStore;
pub use tier::{Dropped, Offer, TierCounters, TierIndex};
