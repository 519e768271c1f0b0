//! [`DeviceStore`]: blocks in one allocation of GPU memory (tier G1), through `cudarc`'s driver
//! API.
//!
//! The driver library (`libcuda`) is loaded when the first store is opened, not linked at build
//! time, so this module compiles on a machine without CUDA and a program built with it starts
//! on one. Opening a store there is an [`Error::Unavailable`].
//!
//! There is no pinned-host store (a G2 in page-locked memory) beside it: `cudarc` hands out
//! page-locked memory only through `unsafe` functions (`CudaContext::alloc_pinned`, because the
//! memory starts uninitialised), and this crate allows no `unsafe` code but NIXL's one
//! registration item (`src/nixl/region.rs`). The host tier is
//! [`HostStore`](crate::HostStore)'s pageable slab; copies between it and a device store go
//! through the driver's staging buffer.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError};
use dynamo_core::{SequenceHash, StorageTier};
use parking_lot::RwLock;

use super::{check_shape, check_size};
use crate::{BlockStore, Error};

const TIER: StorageTier = StorageTier::Device;

/// Blocks in GPU memory: one device allocation of `capacity × block_bytes` bytes made when the
/// store is opened, a map from hash to slot, and a list of free slots, as
/// [`HostStore`](crate::HostStore) keeps them in host memory.
///
/// A put copies the block from host to device into a free slot's range, a get copies a slot's
/// range from device to host; both wait for their copy on the store's own stream before they
/// return, so a driver failure is reported by the call that caused it, as [`Error::Io`].
///
/// One reader-writer lock guards the store: gets copy out side by side; a put or remove waits
/// for them and runs alone. Batches are the trait's loops of single calls: each copy already
/// waits for the device, which costs far more than taking the lock.
///
/// ```
/// use dynamo_core::SequenceHash;
/// use dynamo_kvbm::{BlockStore, DeviceStore, Error};
///
/// match DeviceStore::open(0, 4096, 2) {
///     Ok(store) => {
///         store.put(SequenceHash(7), &[1; 4096])?;
///         let mut block = vec![0; 4096];
///         assert!(store.get(SequenceHash(7), &mut block)?);
///         assert_eq!(block, [1; 4096]);
///     }
///     // No driver or no GPU here (`reason` says which): go on without the device tier.
///     Err(Error::Unavailable { .. }) => {}
///     Err(other) => return Err(other),
/// }
/// # Ok::<(), dynamo_kvbm::Error>(())
/// ```
pub struct DeviceStore {
    ordinal: usize,
    block_bytes: usize,
    capacity: usize,
    stream: Arc<CudaStream>,
    inner: RwLock<Slab>,
}

/// The device allocation and its bookkeeping, under the store's lock.
struct Slab {
    bytes: CudaSlice<u8>,
    slots: HashMap<SequenceHash, usize>,
    free: Vec<usize>,
}

impl DeviceStore {
    /// A store of `capacity` blocks of `block_bytes` bytes each in the memory of GPU `ordinal`
    /// (0 for the first).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `block_bytes` is zero or the allocation would not fit the address
    /// space; [`Error::Unavailable`] when the CUDA driver cannot be loaded, there is no GPU of
    /// that ordinal, or its memory cannot hold the allocation.
    pub fn open(ordinal: usize, block_bytes: usize, capacity: usize) -> Result<Self, Error> {
        let slab_bytes = check_shape(TIER, block_bytes, capacity)?;
        let (stream, bytes) = allocate(ordinal, slab_bytes)?;
        // Slots are handed out lowest first, as in the host store.
        let free = (0..capacity).rev().collect();
        Ok(DeviceStore {
            ordinal,
            block_bytes,
            capacity,
            stream,
            inner: RwLock::new(Slab {
                bytes,
                slots: HashMap::with_capacity(capacity),
                free,
            }),
        })
    }

    /// The ordinal of the GPU whose memory holds the blocks.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The byte range of `slot` in the allocation.
    fn range(&self, slot: usize) -> std::ops::Range<usize> {
        slot * self.block_bytes..(slot + 1) * self.block_bytes
    }

    /// [`Error::Io`] for a driver failure while copying the block of `hash`.
    fn io(hash: SequenceHash, error: DriverError) -> Error {
        Error::Io {
            tier: TIER,
            hash,
            source: std::io::Error::other(error),
        }
    }
}

/// A store's copy stream and its device allocation.
type Opened = (Arc<CudaStream>, CudaSlice<u8>);

/// Load the CUDA driver library, once per process.
///
/// With dynamic loading, `cudarc` loads `libcuda` on its first call and panics when the library
/// cannot be found; it offers no safe way to ask first (its `is_culib_present` is an
/// `unsafe fn`, and this crate keeps `unsafe` to NIXL's registration). So the first call,
/// `cuInit`, runs under [`panic::catch_unwind`], and such a panic becomes
/// [`Error::Unavailable`] carrying `cudarc`'s message. The process's panic hook still prints
/// that message to standard error, once: the
/// outcome is kept, so later opens answer the same without loading (or panicking) again.
fn load_driver() -> Result<(), Error> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| match panic::catch_unwind(cudarc::driver::result::init) {
            // Loaded. Should `cuInit` itself have failed (no device, a driver too old), the
            // context that `allocate` makes next fails the same way and says so.
            Ok(_) => Ok(()),
            Err(payload) => Err(format!(
                "the CUDA driver library cannot be loaded: {}",
                panic_message(payload.as_ref())
            )),
        })
        .clone()
        .map_err(|reason| Error::Unavailable { tier: TIER, reason })
}

/// A context on GPU `ordinal`, a copy stream of its own, and `bytes` zeroed bytes on it.
///
/// The driver is loaded first ([`load_driver`]). The calls here still run under
/// [`panic::catch_unwind`]: `cudarc` looks up each driver function when it is first called and
/// panics if a driver older than the CUDA 12.6 bindings lacks one.
fn allocate(ordinal: usize, bytes: usize) -> Result<Opened, Error> {
    load_driver()?;
    let unavailable = |reason: String| Error::Unavailable { tier: TIER, reason };
    let opened = panic::catch_unwind(AssertUnwindSafe(
        || -> Result<Opened, (&str, DriverError)> {
            let context = CudaContext::new(ordinal).map_err(|error| ("open GPU", error))?;
            // A stream of its own, so the store's copies do not wait for the engine's kernels
            // on the default stream, nor make them wait.
            let stream = context
                .new_stream()
                .map_err(|error| ("make a stream on GPU", error))?;
            // The driver refuses an allocation of zero bytes; a store of no blocks gets one byte.
            let slab = stream
                .alloc_zeros::<u8>(bytes.max(1))
                .map_err(|error| ("allocate memory on GPU", error))?;
            stream
                .synchronize()
                .map_err(|error| ("zero memory on GPU", error))?;
            Ok((stream, slab))
        },
    ));
    match opened {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err((what, error))) => Err(unavailable(format!(
            "cannot {what} {ordinal} ({bytes} bytes): {error}"
        ))),
        Err(payload) => Err(unavailable(format!(
            "the CUDA driver lacks a function on GPU {ordinal}: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

impl BlockStore for DeviceStore {
    fn tier(&self) -> StorageTier {
        TIER
    }

    fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.inner.read().slots.len()
    }

    fn contains(&self, hash: SequenceHash) -> bool {
        self.inner.read().slots.contains_key(&hash)
    }

    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        check_size(TIER, self.block_bytes, block.len())?;
        let mut slab = self.inner.write();
        if slab.slots.contains_key(&hash) {
            return Ok(());
        }
        let slot = slab.free.last().copied().ok_or(Error::Full {
            tier: TIER,
            capacity: self.capacity,
        })?;
        {
            let mut range = slab.bytes.slice_mut(self.range(slot));
            self.stream
                .memcpy_htod(block, &mut range)
                .map_err(|error| Self::io(hash, error))?;
        }
        self.stream
            .synchronize()
            .map_err(|error| Self::io(hash, error))?;
        // The slot is taken only once its bytes are in place: a failed copy leaves it free.
        slab.free.pop();
        slab.slots.insert(hash, slot);
        Ok(())
    }

    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        check_size(TIER, self.block_bytes, into.len())?;
        let slab = self.inner.read();
        let Some(&slot) = slab.slots.get(&hash) else {
            return Ok(false);
        };
        let range = slab.bytes.slice(self.range(slot));
        self.stream
            .memcpy_dtoh(&range, into)
            .map_err(|error| Self::io(hash, error))?;
        // `into` is the caller's from here on: wait until the copy has landed in it.
        self.stream
            .synchronize()
            .map_err(|error| Self::io(hash, error))?;
        Ok(true)
    }

    fn remove(&self, hash: SequenceHash) -> Result<bool, Error> {
        let mut slab = self.inner.write();
        let Some(slot) = slab.slots.remove(&hash) else {
            return Ok(false);
        };
        slab.free.push(slot);
        Ok(true)
    }
}

impl fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceStore")
            .field("ordinal", &self.ordinal)
            .field("block_bytes", &self.block_bytes)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}
