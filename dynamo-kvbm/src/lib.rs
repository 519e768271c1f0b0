//! A multi-tier KV cache block manager.
//!
//! (Front page in progress.)

mod error;
mod eviction;
mod offload;
mod pool;
mod store;
mod stores;
mod tier;

pub use error::Error;
pub use eviction::{AdmissionFilter, AdmitAll, EvictionPolicy, LeavesFirst, Lru, SeenTwice};
/// The `object_store` crate the remote tier is built on, to make its backends with.
pub use object_store;
pub use offload::{
    LowerTier, LowerTiers, OffloadConfig, OffloadCounters, OffloadWorker, TierTraffic,
};
pub use pool::{
    BlockId, BlockPool, Evicted, Held, HeldBlock, PinnedBlock, PoolCounters, PrivateBlock,
};
pub use store::BlockStore;
pub use stores::{DiskConfig, DiskStore, HostStore, ObjectConfig, ObjectStoreBlocks};
pub use tier::{Dropped, Offer, TierCounters, TierIndex};
