//! The storage tiers below the accelerator: host memory ([`HostStore`], G2), a local disk
//! ([`DiskStore`], G3) and an object store ([`ObjectStoreBlocks`], G4), each a [`BlockStore`].
//!
//! Every store has a fixed block size and a capacity in blocks, both set when it is made, and
//! keeps which hashes it holds in memory: `contains` never touches the medium.
//!
//! [`BlockStore`]: crate::BlockStore

#[cfg(feature = "cuda")]
mod cuda;
mod disk;
mod host;
mod object;

#[cfg(feature = "cuda")]
pub use cuda::DeviceStore;
pub use disk::{DiskConfig, DiskStore};
pub use host::HostStore;
pub use object::{ObjectConfig, ObjectStoreBlocks};

use dynamo_core::StorageTier;

use crate::Error;

/// [`Error::BlockSize`] unless `got` is `expected`.
fn check_size(tier: StorageTier, expected: usize, got: usize) -> Result<(), Error> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::BlockSize {
            tier,
            expected,
            got,
        })
    }
}

/// [`Error::Config`] for a block size of zero or a capacity whose bytes overflow `usize`.
fn check_shape(tier: StorageTier, block_bytes: usize, capacity: usize) -> Result<usize, Error> {
    if block_bytes == 0 {
        return Err(Error::Config {
            tier,
            reason: "a block size of zero bytes".to_owned(),
        });
    }
    block_bytes
        .checked_mul(capacity)
        .ok_or_else(|| Error::Config {
            tier,
            reason: format!("{capacity} blocks of {block_bytes} bytes overflow the address space"),
        })
}
