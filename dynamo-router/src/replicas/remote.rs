//! The other replicas' bookings, held as load guards on this replica's tracker.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dynamo_core::{ReplicaId, SharedBooking};

use crate::load::{Booking, LoadGuard, LoadTracker};

/// One booking of another replica.
#[derive(Debug)]
struct Remote {
    guard: LoadGuard,
    /// Dropped at this time unless a digest or a snapshot lists it again.
    expires: Instant,
}

/// What this replica knows of one other replica.
#[derive(Debug, Default)]
struct Peer {
    bookings: HashMap<u64, Remote>,
    /// When this replica last asked it for a snapshot.
    asked_at: Option<Instant>,
}

/// The other replicas' bookings.
#[derive(Debug, Default)]
pub(super) struct Peers {
    peers: HashMap<ReplicaId, Peer>,
    /// Bookings held, over all peers.
    held: usize,
}

/// How remote bookings are kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) ttl: Duration,
    pub(super) max_bookings: usize,
    pub(super) ask_pause: Duration,
    /// The `pool` label of the metrics.
    pub(super) pool: &'static str,
}

impl Peers {
    /// `peer` booked `booking` (a duplicate only renews it).
    pub(super) fn booked(
        &mut self,
        load: &LoadTracker,
        peer: ReplicaId,
        booking: SharedBooking,
        now: Instant,
        limits: Limits,
    ) {
        let held = self.held;
        let entry = self.peers.entry(peer).or_default();
        let expires = now + limits.ttl;
        if let Some(known) = entry.bookings.get_mut(&booking.booking) {
            known.expires = expires;
            if booking.prefilled {
                known.guard.first_token();
            }
            return;
        }
        if held >= limits.max_bookings {
            metrics::counter!("dynamo_router_replica_refused_total", "pool" => limits.pool)
                .increment(1);
            return;
        }
        let number = booking.booking;
        let prefilled = booking.prefilled;
        let mut guard = load.book_unobserved(
            booking.worker,
            Booking {
                blocks: booking.blocks,
                prefill_tokens: booking.prefill_tokens,
                expected_output_tokens: booking.expected_output_tokens,
                sequences: booking.sequences,
            },
        );
        if prefilled {
            guard.first_token();
        }
        entry.bookings.insert(number, Remote { guard, expires });
        self.held += 1;
    }

    pub(super) fn prefilled(&mut self, peer: ReplicaId, booking: u64) {
        if let Some(remote) = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.bookings.get_mut(&booking))
        {
            remote.guard.first_token();
        }
    }

    pub(super) fn released(&mut self, peer: ReplicaId, booking: u64) {
        if let Some(peer) = self.peers.get_mut(&peer)
            && peer.bookings.remove(&booking).is_some()
        {
            self.held -= 1;
        }
    }

    /// `peer`'s digest: drop what it no longer lists, renew what it does; whether to ask it
    /// for a snapshot (it lists a booking this replica missed).
    pub(super) fn digest(
        &mut self,
        peer: ReplicaId,
        listed: &[(u64, bool)],
        now: Instant,
        limits: Limits,
    ) -> bool {
        let entry = self.peers.entry(peer).or_default();
        let numbers: HashSet<u64> = listed.iter().map(|&(number, _)| number).collect();
        let before = entry.bookings.len();
        entry.bookings.retain(|number, _| numbers.contains(number));
        self.held -= before - entry.bookings.len();
        let mut missing = false;
        for &(number, prefilled) in listed {
            match entry.bookings.get_mut(&number) {
                Some(remote) => {
                    remote.expires = now + limits.ttl;
                    if prefilled {
                        remote.guard.first_token();
                    }
                }
                None => missing = true,
            }
        }
        let may_ask = entry
            .asked_at
            .is_none_or(|asked| now.saturating_duration_since(asked) >= limits.ask_pause);
        if missing && may_ask {
            entry.asked_at = Some(now);
            return true;
        }
        false
    }

    /// Drop the bookings nobody renewed in time: a replica that went away, or a release that
    /// was lost with the digests after it.
    pub(super) fn expire(&mut self, now: Instant, limits: Limits) {
        let mut dropped = 0;
        self.peers.retain(|_, peer| {
            let before = peer.bookings.len();
            peer.bookings.retain(|_, remote| remote.expires > now);
            dropped += before - peer.bookings.len();
            let asked_lately = peer
                .asked_at
                .is_some_and(|asked| now.saturating_duration_since(asked) < limits.ask_pause);
            !peer.bookings.is_empty() || asked_lately
        });
        self.held -= dropped;
    }

    /// Each peer's booking numbers, sorted: what this replica believes they hold.
    pub(super) fn view(&self) -> Vec<(ReplicaId, Vec<u64>)> {
        let mut view: Vec<(ReplicaId, Vec<u64>)> = self
            .peers
            .iter()
            .filter(|(_, peer)| !peer.bookings.is_empty())
            .map(|(&id, peer)| {
                let mut numbers: Vec<u64> = peer.bookings.keys().copied().collect();
                numbers.sort_unstable();
                (id, numbers)
            })
            .collect();
        view.sort_unstable_by_key(|(id, _)| *id);
        view
    }
}
