//! What a replica sends: a bounded queue of updates, and its own active bookings.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use dynamo_core::{ReplicaUpdate, SequenceHash, SharedBooking, WorkerId};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::load::LoadObserver;

/// Updates waiting for the transport, at most `capacity`; an update that finds it full is
/// dropped and counted (the next digest repairs what it would have said).
#[derive(Debug)]
pub(super) struct Outbox {
    queue: Mutex<VecDeque<ReplicaUpdate>>,
    capacity: usize,
    ready: Notify,
    dropped: AtomicU64,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn push(&self, update: ReplicaUpdate) {
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dynamo_router_replica_dropped_total").increment(1);
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
/// update.
#[derive(Debug)]
pub(super) struct Local {
    pub(super) outbox: Outbox,
    bookings: Mutex<HashMap<u64, SharedBooking>>,
    next: AtomicU64,
}

impl Local {
    pub(super) fn new(outbox_capacity: usize) -> Self {
        Local {
            outbox: Outbox::new(outbox_capacity),
            bookings: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// Every active booking.
    pub(super) fn bookings(&self) -> Vec<SharedBooking> {
        let mut bookings: Vec<SharedBooking> = self.bookings.lock().values().cloned().collect();
        bookings.sort_unstable_by_key(|booking| booking.booking);
        bookings
    }

    /// Every active booking's number, and whether its prefill ended.
    pub(super) fn digest(&self) -> Vec<(u64, bool)> {
        let mut digest: Vec<(u64, bool)> = self
            .bookings
            .lock()
            .values()
            .map(|booking| (booking.booking, booking.prefilled))
            .collect();
        digest.sort_unstable();
        digest
    }
}

impl LoadObserver for Local {
    fn booked(
        &self,
        worker: WorkerId,
        blocks: &[SequenceHash],
        prefill_tokens: u64,
        expected_output_tokens: u64,
    ) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let booking = SharedBooking {
            booking: key,
            worker,
            blocks: blocks.to_vec(),
            prefill_tokens,
            expected_output_tokens,
            prefilled: false,
        };
        self.bookings.lock().insert(key, booking.clone());
        self.outbox.push(ReplicaUpdate::Booked(booking));
        key
    }

    fn prefilled(&self, key: u64) {
        if let Some(booking) = self.bookings.lock().get_mut(&key) {
            booking.prefilled = true;
        }
        self.outbox.push(ReplicaUpdate::Prefilled { booking: key });
    }

    fn released(&self, key: u64) {
        self.bookings.lock().remove(&key);
        self.outbox.push(ReplicaUpdate::Released { booking: key });
    }
}
