//! What router replicas tell each other, so that each one routes on the load and the cache
//! predictions of all of them.
//!
//! A replica publishes a [`ReplicaMessage`] when it books a request on a worker, when the
//! request's prefill ends, when it ends, and (in approximate mode) when it predicts that a
//! worker now caches a prompt. Every replica applies the others'. The messages are loss
//! tolerant: each replica also publishes a [`ReplicaUpdate::Digest`] of its active bookings now
//! and then, so a replica that missed messages converges again, and one that joins asks for a
//! snapshot ([`ReplicaUpdate::SnapshotRequest`]). The router (`dynamo_router::replicas`) owns the logic; a
//! transport carries the messages.

use serde::{Deserialize, Serialize};

use crate::{SequenceHash, WorkerId};

/// A router replica, known by an id it chooses at random when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(pub u64);

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One request a replica booked on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedBooking {
    /// The booking's number, unique within its replica.
    pub booking: u64,
    /// The worker it is booked on.
    pub worker: WorkerId,
    /// The prompt's blocks, by sequence hash (a chain).
    pub blocks: Vec<SequenceHash>,
    /// Prompt tokens the worker computes.
    pub prefill_tokens: u64,
    /// Output tokens the request is expected to produce.
    pub expected_output_tokens: u64,
    /// The sequences it decodes: its `n` where the engine forks it into `n` choices, else 1
    /// (and 1 when a message leaves the field out).
    #[serde(
        default = "crate::request::one",
        skip_serializing_if = "crate::request::is_one"
    )]
    pub sequences: u32,
    /// Whether the prefill has ended (the first token came).
    pub prefilled: bool,
}

/// One message from a replica to the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMessage {
    /// The replica that sent it.
    pub replica: ReplicaId,
    /// What it says.
    pub update: ReplicaUpdate,
}

/// What a replica tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplicaUpdate {
    /// It booked a request.
    Booked(SharedBooking),
    /// A request it booked produced its first token.
    Prefilled {
        /// The booking.
        booking: u64,
    },
    /// A request it booked ended.
    Released {
        /// The booking.
        booking: u64,
    },
    /// Approximate mode: it predicts that `worker` caches these blocks now (it sent them
    /// there, or it is passing on its predictions in answer to a snapshot request).
    Routed {
        /// The worker.
        worker: WorkerId,
        /// The blocks, by sequence hash.
        blocks: Vec<SequenceHash>,
    },
    /// Its active bookings, each with whether its prefill has ended: a receiver drops the
    /// bookings of this replica that are not listed and asks for a snapshot when one it does
    /// not know is.
    Digest {
        /// `(booking, prefilled)` for each active booking.
        bookings: Vec<(u64, bool)>,
    },
    /// It asks for the state of `of` (every replica, when `None`), having just joined or
    /// found its view out of date. The replica asked answers with small messages, none larger
    /// than an ordinary one: a [`Booked`](Self::Booked) per active booking, then a
    /// [`Digest`](Self::Digest), then its predictions as [`Routed`](Self::Routed) messages.
    SnapshotRequest {
        /// The replica asked.
        of: Option<ReplicaId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booking_of_one_sequence_leaves_the_field_out_and_reads_back_as_one() {
        let booking = SharedBooking {
            booking: 7,
            worker: WorkerId::new(2),
            blocks: vec![SequenceHash(5)],
            prefill_tokens: 64,
            expected_output_tokens: 0,
            sequences: 1,
            prefilled: false,
        };
        let json = serde_json::to_value(&booking).expect("serializes");
        assert!(
            json.get("sequences").is_none(),
            "as replicas before the field wrote it"
        );
        let back: SharedBooking = serde_json::from_value(json).expect("parses");
        assert_eq!(back, booking);
        let forked = SharedBooking {
            sequences: 4,
            ..booking
        };
        let json = serde_json::to_string(&forked).expect("serializes");
        let back: SharedBooking = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.sequences, 4);
    }
}
