//! What can go wrong reading a server's KV events.

/// A problem with a server's KV events. None of them stops a
/// [`KvEventPoller`](super::KvEventPoller): each is reported on its stream, and polling goes
/// on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// An answer, or one event in it, is not what `trtllm-serve` sends; nothing of it was
    /// applied.
    #[error("the KV events are not trtllm-serve's: {what}")]
    Malformed {
        /// What was wrong.
        what: String,
        /// The JSON error, where there was one.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The server's event ids skipped from `expected` to `received`: it dropped events from
    /// its bounded buffer before they were read. What they stored is missing from the index,
    /// and what they removed stays in it until the server clears its cache.
    #[error(
        "KV events {expected} to {} were lost (dropped by the server's event buffer)",
        received.saturating_sub(1)
    )]
    Lost {
        /// The first event id that never arrived.
        expected: u64,
        /// The event id that arrived instead.
        received: u64,
    },
    /// A stored block holds `engine` tokens where the router's blocks hold `ours`: the
    /// router's block size must be the server's `tokens_per_block`. The event is not applied.
    #[error(
        "a stored block of {engine} tokens, where the router's blocks hold {ours}: set the \
         router's block size to the server's tokens_per_block"
    )]
    BlockSizeMismatch {
        /// The tokens in the engine's block.
        engine: usize,
        /// The router's block size.
        ours: u32,
    },
    /// The poll itself failed: the server could not be reached, answered with an error status,
    /// or took longer than the poll timeout.
    #[error("polling the KV events failed: {0}")]
    Poll(#[source] dynamo_core::Error),
}

impl EventsError {
    /// A stable snake_case name, for metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            EventsError::Malformed { .. } => "malformed",
            EventsError::Lost { .. } => "lost",
            EventsError::BlockSizeMismatch { .. } => "block_size_mismatch",
            EventsError::Poll(_) => "poll",
        }
    }

    pub(super) fn malformed(what: impl Into<String>, source: Option<serde_json::Error>) -> Self {
        EventsError::Malformed {
            what: what.into(),
            source,
        }
    }
}
