//! What can go wrong in the block manager.

use std::time::Duration;

use dynamo_core::{SequenceHash, StorageTier, WorkerId};

/// The error of every fallible operation in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A block's bytes are not the store's block size.
    #[error("a block of {got} bytes does not fit a {tier:?} store of {expected}-byte blocks")]
    BlockSize {
        /// The store's tier.
        tier: StorageTier,
        /// The store's block size in bytes.
        expected: usize,
        /// The size that was offered.
        got: usize,
    },
    /// The store holds as many blocks as it can; remove some first.
    #[error("the {tier:?} store is full ({capacity} blocks)")]
    Full {
        /// The store's tier.
        tier: StorageTier,
        /// Its capacity in blocks.
        capacity: usize,
    },
    /// A store was configured in a way it cannot work.
    #[error("invalid {tier:?} store configuration: {reason}")]
    Config {
        /// The store's tier.
        tier: StorageTier,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a block failed in the medium below the store.
    #[error("{tier:?} store I/O on block {hash}: {source}")]
    Io {
        /// The store's tier.
        tier: StorageTier,
        /// The block being read or written.
        hash: SequenceHash,
        /// What the medium said.
        #[source]
        source: std::io::Error,
    },
    /// The medium below a store could not be opened or prepared (a disk store's file).
    #[error("cannot open the {tier:?} store at {}: {source}", path.display())]
    Open {
        /// The store's tier.
        tier: StorageTier,
        /// The file or place it was opening.
        path: std::path::PathBuf,
        /// What the medium said.
        #[source]
        source: std::io::Error,
    },
    /// The medium of a store is not on this machine or cannot be used: no GPU driver, no
    /// device of that ordinal, or its memory cannot be had.
    #[error("the {tier:?} store is unavailable: {reason}")]
    Unavailable {
        /// The store's tier.
        tier: StorageTier,
        /// What is missing, as the driver or loader said it.
        reason: String,
    },
    /// A request to the object store below the remote tier failed.
    #[error("object store request on {key}: {source}")]
    Remote {
        /// The object (or prefix) the request was about.
        key: String,
        /// What the object store said.
        #[source]
        source: object_store::Error,
    },
    /// A store that can only be read was asked to write or remove a block (the exports of a
    /// [`KvExports`](crate::transfer::KvExports) read as a [`BlockStore`](crate::BlockStore)).
    #[error("the {tier:?} store is read-only here")]
    ReadOnly {
        /// The store's tier.
        tier: StorageTier,
    },
    /// A KV transfer that the source does not hold: never offered, released, expired, or
    /// dropped to make room for a newer one.
    #[error("KV transfer {transfer} is not held by its source")]
    UnknownTransfer {
        /// The transfer's id at the source.
        transfer: u64,
    },
    /// A hand-over whose source is not registered in this process and has no block server
    /// address to pull from.
    #[error("no way to reach the KV blocks of worker {worker}: not in this process, no address")]
    NoRoute {
        /// The prefill worker that holds the blocks.
        worker: WorkerId,
    },
    /// Talking to a block server failed: it could not be reached, or the connection broke.
    #[error("KV transfer with {address}: {source}")]
    Transfer {
        /// The block server (`HOST:PORT`).
        address: String,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// A block server did not answer a pull or release within the deadline.
    #[error("KV transfer with {address} timed out after {after:?}")]
    TransferTimeout {
        /// The block server (`HOST:PORT`).
        address: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A block server answered something this side cannot read, or refused the request.
    #[error("KV transfer with {address}: {reason}")]
    Protocol {
        /// The block server (`HOST:PORT`).
        address: String,
        /// What was wrong.
        reason: String,
    },
    /// NIXL refused or failed an operation: an agent, a registration, loading a peer's
    /// metadata, or a transfer.
    #[cfg(feature = "nixl")]
    #[error("NIXL could not {operation}: {source}")]
    Nixl {
        /// What was being done.
        operation: &'static str,
        /// What NIXL said.
        #[source]
        source: nixl_sys::NixlError,
    },
}
