//! Per-worker load, booked before dispatch and released when the request's guard drops.
//!
//! The known failure of cache-aware routers is herding: when a code path routes without booking
//! load, every request that shares a hot prefix sees the same idle-looking worker and lands on
//! it. Here the only way to account for a request is [`LoadTracker::book`], which returns a
//! [`LoadGuard`]; the load stays booked until the guard drops, whether the stream ends, errors
//! or is abandoned.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use dynamo_core::{SequenceHash, WorkerId};
use parking_lot::Mutex;

/// The load of one worker, as booked by the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Requests dispatched and not yet finished.
    pub active_requests: u32,
    /// Prompt tokens of requests that have not produced their first token.
    pub active_prefill_tokens: u64,
    /// KV blocks held by active requests; a prompt block shared by concurrent requests counts
    /// once, and each request adds one block for its partial tail and output.
    pub active_decode_blocks: u64,
    /// The output tokens active requests are expected to produce (from routing hints).
    pub expected_output_tokens: u64,
}

/// What one request adds to its worker's load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Booking {
    /// The request's prompt blocks, by sequence hash.
    pub blocks: Vec<SequenceHash>,
    /// Prompt tokens the worker must prefill (the whole prompt, or the part not cached).
    pub prefill_tokens: u64,
    /// Expected output tokens, if a hint says.
    pub expected_output_tokens: u64,
}

#[derive(Debug, Default)]
struct WorkerBook {
    load: WorkerLoad,
    /// Prompt blocks of active requests, with how many requests hold each.
    blocks: HashMap<SequenceHash, u32, foldhash::fast::RandomState>,
}

impl WorkerBook {
    fn refresh_blocks(&mut self) {
        self.load.active_decode_blocks =
            self.blocks.len() as u64 + u64::from(self.load.active_requests);
    }
}

/// The load of every worker, shared by the router's tasks; cheap to clone.
///
/// ```
/// use dynamo_core::{SequenceHash, WorkerId};
/// use dynamo_router::{Booking, LoadTracker};
///
/// let tracker = LoadTracker::new();
/// let worker = WorkerId::new(1);
/// let booking = Booking { blocks: vec![SequenceHash(7)], prefill_tokens: 100, expected_output_tokens: 0 };
/// let mut guard = tracker.book(worker, booking);
/// assert_eq!(tracker.load(worker).active_prefill_tokens, 100);
/// guard.first_token(); // prefill is done
/// assert_eq!(tracker.load(worker).active_prefill_tokens, 0);
/// drop(guard); // the stream ended
/// assert_eq!(tracker.load(worker).active_requests, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoadTracker {
    books: Arc<Mutex<HashMap<WorkerId, WorkerBook, foldhash::fast::RandomState>>>,
}

impl LoadTracker {
    /// A tracker with no load booked.
    pub fn new() -> Self {
        LoadTracker::default()
    }

    /// Book a request on `worker`; the load is released when the returned guard drops.
    pub fn book(&self, worker: WorkerId, booking: Booking) -> LoadGuard {
        let mut books = self.books.lock();
        let book = books.entry(worker).or_default();
        book.load.active_requests += 1;
        book.load.active_prefill_tokens += booking.prefill_tokens;
        book.load.expected_output_tokens += booking.expected_output_tokens;
        for hash in &booking.blocks {
            *book.blocks.entry(*hash).or_insert(0) += 1;
        }
        book.refresh_blocks();
        LoadGuard {
            tracker: self.clone(),
            worker,
            booking,
            prefilling: true,
        }
    }

    /// The load booked on `worker` now.
    pub fn load(&self, worker: WorkerId) -> WorkerLoad {
        self.books
            .lock()
            .get(&worker)
            .map(|book| book.load)
            .unwrap_or_default()
    }

    /// The load of every worker with anything booked, or booked before.
    pub fn loads(&self) -> Vec<(WorkerId, WorkerLoad)> {
        self.books
            .lock()
            .iter()
            .map(|(worker, book)| (*worker, book.load))
            .collect()
    }

    /// The load of each of `workers`, with how many leading blocks of `blocks` the worker's
    /// active requests hold, read under one lock.
    pub(crate) fn with_prefixes(
        &self,
        workers: impl Iterator<Item = WorkerId>,
        blocks: &[SequenceHash],
    ) -> Vec<(WorkerId, WorkerLoad, u32)> {
        let books = self.books.lock();
        workers
            .map(|worker| match books.get(&worker) {
                Some(book) => {
                    let held = blocks
                        .iter()
                        .take_while(|hash| book.blocks.contains_key(hash))
                        .count();
                    (worker, book.load, held as u32)
                }
                None => (worker, WorkerLoad::default(), 0),
            })
            .collect()
    }

    /// Drop the book of a worker that left, if nothing is booked on it any more.
    pub(crate) fn forget_idle(&self, worker: WorkerId) {
        let mut books = self.books.lock();
        if books
            .get(&worker)
            .is_some_and(|book| book.load.active_requests == 0)
        {
            books.remove(&worker);
        }
    }

    fn end_prefill(&self, worker: WorkerId, tokens: u64) {
        if let Some(book) = self.books.lock().get_mut(&worker) {
            book.load.active_prefill_tokens =
                book.load.active_prefill_tokens.saturating_sub(tokens);
        }
    }

    fn release(&self, worker: WorkerId, booking: &Booking, prefilling: bool) {
        let mut books = self.books.lock();
        let Some(book) = books.get_mut(&worker) else {
            return;
        };
        let load = &mut book.load;
        load.active_requests = load.active_requests.saturating_sub(1);
        if prefilling {
            load.active_prefill_tokens = load
                .active_prefill_tokens
                .saturating_sub(booking.prefill_tokens);
        }
        load.expected_output_tokens = load
            .expected_output_tokens
            .saturating_sub(booking.expected_output_tokens);
        for hash in &booking.blocks {
            if let Entry::Occupied(mut held) = book.blocks.entry(*hash) {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                }
            }
        }
        book.refresh_blocks();
    }
}

/// A request's booked load; dropping it releases the load.
///
/// # Cancel safety
///
/// The guard releases its load in `Drop`, so a request future or stream that is dropped at any
/// point releases exactly what it booked, once.
#[derive(Debug)]
#[must_use = "the load is released as soon as the guard drops"]
pub struct LoadGuard {
    tracker: LoadTracker,
    worker: WorkerId,
    booking: Booking,
    prefilling: bool,
}

impl LoadGuard {
    /// The worker the load is booked on.
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// The first token arrived: the prompt is prefilled, release its prefill tokens. Calling it
    /// again does nothing.
    pub fn first_token(&mut self) {
        if std::mem::take(&mut self.prefilling) {
            self.tracker
                .end_prefill(self.worker, self.booking.prefill_tokens);
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.tracker
            .release(self.worker, &self.booking, self.prefilling);
    }
}
