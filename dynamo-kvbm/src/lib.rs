//! A multi-tier KV cache block manager: the blocks an engine computed, kept where they are
//! cheapest to keep, and brought back instead of computed again.
//!
//! An LLM engine keeps each sequence's keys and values (its KV cache) in fixed-size blocks of
//! `block_size` tokens. A block is identified by the sequence hash of its tokens and everything
//! before them ([`dynamo_core::BlockHasher`]), so two requests that share a prompt prefix share
//! its blocks. This crate owns those blocks in five layers, each usable alone:
//!
//! | layer | what it does | types |
//! |---|---|---|
//! | device pool | which of the engine's `N` device blocks holds what; prefix reuse; eviction of released blocks, least recently released first; `Stored`/`Removed` events | [`BlockPool`], with type-state handles [`PrivateBlock`] and [`PinnedBlock`] |
//! | tier bookkeeping | which blocks a lower tier holds within its capacity, what it evicts ([`EvictionPolicy`]: [`Lru`], [`LeavesFirst`]), what it admits ([`AdmissionFilter`]: [`SeenTwice`] keeps one-off prefixes off a disk), tier-tagged events | [`TierIndex`] |
//! | storage | the bytes: put / get / contains / remove fixed-size blocks by hash | [`BlockStore`]: [`HostStore`] (G2, one slab), [`DiskStore`] (G3, one preallocated file, `O_DIRECT`), [`ObjectStoreBlocks`] (G4, any `object_store` backend: S3, GCS, Azure, a local directory); `DeviceStore` (G1, GPU memory, feature `cuda`) |
//! | the hierarchy | the tiers below a device pool: offload on eviction (host on the engine's thread, the tiers below through a bounded queue and a batching worker), onboard a request's continuation, counters | [`LowerTiers`], [`OffloadWorker`] |
//! | the data plane | a prompt's blocks from a prefill worker to a decode worker: a bounded, leased outbox; reads in place within a process, pulls over TCP across processes (or NIXL READs of host memory, `nixl`: `NixlSource`, `NixlFetch`) | [`KvExports`], [`KvFetch`]: [`LocalExports`], [`TcpFetch`], [`KvFetcher`]; [`serve_exports`] |
//!
//! For disaggregated serving, a prefill worker [offers](KvExports::offer) a prompt's blocks to
//! its exports and hands the transfer over ([`dynamo_core::KvHandoff`]); a decode worker
//! [fetches](KvFetch::fetch) them, straight from the exports when both run in one process, or
//! from the prefill worker's block server over TCP into a bounded landing store, and releases
//! them. The [`transfer`] module shows both.
//!
//! The candle engine (`dynamo-candle`) uses all five with real bytes. The simulator
//! (`dynamo-mocker`) uses the pool and the bookkeeping with a transfer-time model instead of
//! bytes, which is how `dynamo-replay --host-blocks N` answers "what would a host tier of N
//! blocks buy on this trace?".
//!
//! # Example: a device pool over a host tier over a disk
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use dynamo_core::{BlockHasher, BlockSize, StorageTier};
//! use dynamo_kvbm::{
//!     BlockPool, BlockStore, DiskConfig, DiskStore, HostStore, LowerTier, LowerTiers,
//!     OffloadConfig,
//! };
//!
//! let block_size = BlockSize::new(4)?;
//! let block_bytes = 4096;
//! // One block of host memory, and a disk of eight below it.
//! let host: Arc<dyn BlockStore> = Arc::new(HostStore::new(block_bytes, 1)?);
//! let path = std::env::temp_dir().join(format!("kvbm-doc-{}.blocks", std::process::id()));
//! let disk: Arc<dyn BlockStore> = Arc::new(DiskStore::open(DiskConfig::new(&path, block_bytes, 8))?);
//! let (tiers, worker) = LowerTiers::new(
//!     vec![LowerTier::new(host, block_size), LowerTier::new(disk, block_size)],
//!     OffloadConfig::default(),
//! )?;
//! std::thread::spawn(move || worker.run());
//!
//! // A device pool of one block, over a prompt of two.
//! let mut pool = BlockPool::new(1, block_size);
//! pool.track_evictions(true);
//! let prompt = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
//! let mut device = vec![0u8; block_bytes]; // the engine's KV bytes for block id 0
//! let mut parent = None;
//! for (i, block) in prompt.iter().enumerate() {
//!     let mut taken = Vec::new();
//!     assert!(pool.take(1, &mut taken));
//!     // Taking may evict: offload what was there before overwriting it.
//!     for evicted in pool.take_evicted() {
//!         tiers.offload(evicted.block, evicted.parent, &device)?;
//!     }
//!     device.fill(i as u8 + 1); // "compute" the block
//!     let mut held = vec![pool.register(taken.remove(0), parent, *block)];
//!     pool.release(&mut held);
//!     parent = Some(block.sequence);
//! }
//! // Evicting the second block from the device pushes the first from host to disk.
//! let mut taken = Vec::new();
//! assert!(pool.take(1, &mut taken));
//! for evicted in pool.take_evicted() {
//!     tiers.offload(evicted.block, evicted.parent, &device)?;
//! }
//! assert!(tiers.wait_idle(Duration::from_secs(5)));
//!
//! // A request for the prompt onboards both blocks: the first from disk, the second from host.
//! let mut bytes = Vec::new();
//! assert_eq!(tiers.onboard(&prompt, &mut bytes), 2);
//! assert_eq!((bytes[0], bytes[block_bytes]), (1, 2));
//! let tiers_seen: Vec<StorageTier> = tiers.take_events().iter().map(|(tier, _)| *tier).collect();
//! assert!(tiers_seen.contains(&StorageTier::Disk));
//! # pool.release(&mut taken);
//! # drop(tiers);
//! # let _ = std::fs::remove_file(&path);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! | feature | adds | builds without |
//! |---|---|---|
//! | `s3` | S3 and S3-compatible servers for [`ObjectStoreBlocks`] (`object_store`'s `aws`) | — |
//! | `cuda` | `DeviceStore`, the device tier (G1) in GPU memory through `cudarc`, loaded at run time; opening one without a driver is an [`Error::Unavailable`] | a CUDA toolkit, a driver or a GPU |
//! | `nixl` | `is_nixl_loaded`; `NixlRegion`: host memory registered with a NIXL agent; the NIXL hand-over of host memory, `NixlSource` on the prefill side's block server and `NixlFetch` on the decode side | NIXL (it needs `libclang` to build) |
//!
//! `docs/kvbm.md` has the design, the choices where vLLM, SGLang and Dynamo differ, and the
//! measurements.

mod changes;
mod error;
mod eviction;
pub mod metrics;
#[cfg(feature = "nixl")]
mod nixl;
mod offload;
mod pool;
mod store;
mod stores;
mod tier;
pub mod transfer;

pub use error::Error;
pub use eviction::{AdmissionFilter, AdmitAll, EvictionPolicy, LeavesFirst, Lru, SeenTwice};
#[cfg(feature = "nixl")]
pub use nixl::{NixlAgent, NixlRegion, is_nixl_loaded};
/// The `object_store` crate the remote tier is built on, to make its backends with.
pub use object_store;
pub use offload::{
    LowerTier, LowerTiers, OffloadConfig, OffloadCounters, OffloadWorker, TierTraffic,
};
pub use pool::{
    BlockId, BlockPool, Evicted, Held, HeldBlock, PinnedBlock, PoolCounters, PrivateBlock,
};
pub use store::BlockStore;
#[cfg(feature = "cuda")]
pub use stores::DeviceStore;
pub use stores::{DiskConfig, DiskStore, HostStore, ObjectConfig, ObjectStoreBlocks};
pub use tier::{Dropped, Offer, TierCounters, TierIndex};
pub use transfer::{
    BlockServerConfig, ExportCounters, Fetched, KvExports, KvFetch, KvFetcher, LocalExports,
    Offered, TcpFetch, TcpFetchConfig, serve_exports, serve_exports_with,
};
#[cfg(feature = "nixl")]
pub use transfer::{NixlFetch, NixlSource};
