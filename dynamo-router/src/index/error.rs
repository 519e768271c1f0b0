//! What can go wrong when an event reaches the index.

use dynamo_core::{BlockSize, SequenceHash, WorkerId};

/// Why the index did not apply an event, or applied only part of it.
///
/// Every variant says what happened to the index, which is never left inconsistent. Each is
/// counted in the `dynamo_router_index_rejected_total` metric under its
/// [`name`](IndexError::name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A `Stored` event used another block size than the index. Not applied: blocks of
    /// different sizes never share a hash, so applying it could only produce misses.
    #[error("worker {worker} stores blocks of {event} tokens but the index uses blocks of {index}")]
    BlockSizeMismatch {
        /// The worker that sent the event.
        worker: WorkerId,
        /// The index's block size.
        index: BlockSize,
        /// The event's block size.
        event: BlockSize,
    },
    /// A `Stored` event continues a block the worker is not known to hold. Not applied: events
    /// were lost or reordered, and the worker needs a resync.
    #[error("worker {worker} stored blocks after {parent}, which it is not known to hold")]
    UnknownParent {
        /// The worker that sent the event.
        worker: WorkerId,
        /// The parent the event names.
        parent: SequenceHash,
    },
    /// A `Removed` event named blocks the worker was not known to hold in that tier. The known
    /// blocks were removed; the unknown ones were skipped.
    #[error("worker {worker} removed {unknown} blocks it was not known to hold")]
    UnknownRemoval {
        /// The worker that sent the event.
        worker: WorkerId,
        /// How many of the event's blocks were unknown.
        unknown: usize,
    },
    /// The event's id is not newer than the last applied event of its worker: a duplicate or a
    /// late delivery. Not applied.
    #[error("worker {worker} sent event {received}, but events up to {last_applied} are applied")]
    StaleEvent {
        /// The worker that sent the event.
        worker: WorkerId,
        /// The id of the last applied event.
        last_applied: u64,
        /// The id received.
        received: u64,
    },
    /// The index has no room for another worker.
    #[error("the index tracks its maximum of {max} workers")]
    TooManyWorkers {
        /// The maximum.
        max: u32,
    },
}

impl IndexError {
    /// A stable snake_case name, for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            IndexError::BlockSizeMismatch { .. } => "block_size_mismatch",
            IndexError::UnknownParent { .. } => "unknown_parent",
            IndexError::UnknownRemoval { .. } => "unknown_removal",
            IndexError::StaleEvent { .. } => "stale_event",
            IndexError::TooManyWorkers { .. } => "too_many_workers",
        }
    }
}
