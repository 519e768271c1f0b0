//! What a replica sends: a bounded queue of updates, and its own active bookings.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use dynamo_core::{ReplicaUpdate, SequenceHash, SharedBooking, WorkerId};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::load::{Charge, LoadObserver};

/// Updates waiting for the transport, at most `capacity`; an update that finds it full is
/// dropped and counted (the next digest repairs what it would have said).
#[derive(Debug)]
pub(super) struct Outbox {
    queue: Mutex<VecDeque<ReplicaUpdate>>,
    capacity: usize,
    /// The `pool` label of its metric.
    pool: &'static str,
    ready: Notify,
    dropped: AtomicU64,
}

impl Outbox {
    pub(super) fn new(capacity: usize, pool: &'static str) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            pool,
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn push(&self, update: ReplicaUpdate) {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dynamo_router_replica_dropped_total", "pool" => self.pool)
                .increment(1);
            return;
        }
        queue.push_back(update);
        drop(queue);
        self.ready.notify_one();
    }

    pub(super) fn pop(&self) -> Option<ReplicaUpdate> {
        self.queue.lock().pop_front()
    }

    pub(super) async fn next(&self) -> ReplicaUpdate {
        loop {
            let ready = self.ready.notified();
            if let Some(update) = self.pop() {
                return update;
            }
            ready.await;
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The replica's own active bookings, told by its load tracker; each change goes out as an
/// update. A change and its update happen under one lock, and so do a digest and its update,
/// so that a digest lists exactly the bookings whose `booked` went out before it and whose
/// `released` did not.
#[derive(Debug)]
pub(super) struct Local {
    pub(super) outbox: Outbox,
    bookings: Mutex<HashMap<u64, SharedBooking>>,
    next: AtomicU64,
}

impl Local {
    pub(super) fn new(outbox_capacity: usize, pool: &'static str) -> Self {
        Local {
            outbox: Outbox::new(outbox_capacity, pool),
            bookings: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// Every active booking's number, and whether its prefill ended.
    pub(super) fn digest(&self) -> Vec<(u64, bool)> {
        digest_of(&self.bookings.lock())
    }

    /// Queue a digest.
    pub(super) fn push_digest(&self) {
        let bookings = self.bookings.lock();
        self.outbox.push(ReplicaUpdate::Digest {
            bookings: digest_of(&bookings),
        });
    }

    /// Queue every booking, then a digest: what a snapshot request is answered with.
    pub(super) fn push_snapshot(&self) {
        let bookings = self.bookings.lock();
        let mut all: Vec<&SharedBooking> = bookings.values().collect();
        all.sort_unstable_by_key(|booking| booking.booking);
        for booking in all {
            self.outbox.push(ReplicaUpdate::Booked(booking.clone()));
        }
        self.outbox.push(ReplicaUpdate::Digest {
            bookings: digest_of(&bookings),
        });
    }
}

impl LoadObserver for Local {
    fn booked(&self, worker: WorkerId, blocks: &[SequenceHash], charge: Charge) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let booking = SharedBooking {
            booking: key,
            worker,
            blocks: blocks.to_vec(),
            prefill_tokens: charge.prefill_tokens,
            expected_output_tokens: charge.expected_output_tokens,
            sequences: charge.sequences,
            prefilled: false,
        };
        let mut bookings = self.bookings.lock();
        bookings.insert(key, booking.clone());
        self.outbox.push(ReplicaUpdate::Booked(booking));
        key
    }

    fn prefilled(&self, key: u64) {
        let mut bookings = self.bookings.lock();
        if let Some(booking) = bookings.get_mut(&key) {
            booking.prefilled = true;
        }
        self.outbox.push(ReplicaUpdate::Prefilled { booking: key });
    }

    fn released(&self, key: u64) {
        let mut bookings = self.bookings.lock();
        bookings.remove(&key);
        self.outbox.push(ReplicaUpdate::Released { booking: key });
    }
}

/// `(booking, prefilled)` of every booking, sorted.
fn digest_of(bookings: &HashMap<u64, SharedBooking>) -> Vec<(u64, bool)> {
    let mut digest: Vec<(u64, bool)> = bookings
        .values()
        .map(|booking| (booking.booking, booking.prefilled))
        .collect();
    digest.sort_unstable();
    digest
}
