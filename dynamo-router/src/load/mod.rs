//! Per-worker load, booked before dispatch and released when the request's guard drops.
//!
//! The known failure of cache-aware routers is herding: when a code path routes without booking
//! load, every request that shares a hot prefix sees the same idle-looking worker and lands on
//! it. Here the only way to account for a request is [`LoadTracker::book`], which returns a
//! [`LoadGuard`]; the load stays booked until the guard drops, whether the stream ends, errors
//! or is abandoned.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dynamo_core::{SequenceHash, WorkerId};
use parking_lot::Mutex;

mod snapshot;

pub(crate) use snapshot::StateCache;

/// The load of one worker, as booked by the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Sequences dispatched and not yet finished: one per request, or `n` for a request that
    /// its engine forks into `n` choices ([`Booking::sequences`]), as vLLM counts a request's
    /// parallel samples among its running requests.
    pub active_requests: u32,
    /// Prompt tokens of requests that have not produced their first token.
    pub active_prefill_tokens: u64,
    /// KV blocks held by active requests; a prompt block shared by concurrent requests counts
    /// once, and each sequence adds one block for its partial tail and output.
    pub active_decode_blocks: u64,
    /// The output tokens active requests are expected to produce (from routing hints).
    pub expected_output_tokens: u64,
    /// The KV blocks the worker's cache holds in all, in blocks of the router's size, when the
    /// worker told ([`LoadTracker::set_kv_capacity`]); `None` (or 0) when it is not known.
    /// Not booked: it stays until the worker reports another or is forgotten.
    pub kv_capacity_blocks: Option<u64>,
}

/// What one request adds to its worker's load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The request's prompt blocks, by sequence hash: a chain, in which each hash stands for its
    /// block and every block before it (as [`SequenceHash::chain`] makes them), so that two
    /// requests share a block only if they share everything before it.
    pub blocks: Vec<SequenceHash>,
    /// Prompt tokens the worker must prefill (the whole prompt, or the part not cached).
    pub prefill_tokens: u64,
    /// Expected output tokens, if a hint says (of all its sequences together).
    pub expected_output_tokens: u64,
    /// The sequences the request decodes: 1, or `n` where the engine forks it into `n`
    /// choices after one prefill (they share the prompt's blocks; each holds its own tail).
    /// 0 counts as 1.
    pub sequences: u32,
}

impl Default for Booking {
    /// No blocks and no tokens, one sequence.
    fn default() -> Self {
        Booking {
            blocks: Vec::new(),
            prefill_tokens: 0,
            expected_output_tokens: 0,
            sequences: 1,
        }
    }
}

/// What a booking adds to its worker's counts, besides its blocks: what its guard takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) prefill_tokens: u64,
    pub(crate) expected_output_tokens: u64,
    /// At least 1.
    pub(crate) sequences: u32,
}

impl Charge {
    fn of(booking: &Booking) -> Self {
        Charge::new(
            booking.prefill_tokens,
            booking.expected_output_tokens,
            booking.sequences,
        )
    }

    pub(crate) fn new(prefill_tokens: u64, expected_output_tokens: u64, sequences: u32) -> Self {
        Charge {
            prefill_tokens,
            expected_output_tokens,
            sequences: sequences.max(1),
        }
    }
}

/// The load booked on one worker.
///
/// Distinct prompt blocks are counted without a set of blocks. The active requests' chains form
/// a tree; a new chain adds the blocks past the longest prefix it shares with any active chain,
/// and a finished one takes away the blocks past the longest prefix it shares with the chains
/// that remain. Because a chain's hashes agree with another's up to some position and differ
/// after it, the shared prefix of two chains is found by binary search. Booking and releasing
/// cost `O(active requests × log blocks)` comparisons instead of one hash-map update per block.
#[derive(Debug, Default)]
struct WorkerBook {
    load: WorkerLoad,
    /// The prompt blocks of each active request that has any, by booking number, with the
    /// first block beside them (most chains share nothing with a query, and this finds it
    /// without reading the chain).
    chains: Vec<(u64, SequenceHash, Vec<SequenceHash>)>,
    /// Distinct blocks in `chains`.
    distinct: u64,
    next_booking: u64,
}

impl WorkerBook {
    fn refresh_blocks(&mut self) {
        self.load.active_decode_blocks = self.distinct + u64::from(self.load.active_requests);
    }

    /// How many leading blocks of `blocks` some active request holds.
    fn held_prefix(&self, blocks: &[SequenceHash]) -> usize {
        let Some(first) = blocks.first() else {
            return 0;
        };
        self.chains
            .iter()
            .filter(|(_, head, _)| head == first)
            .map(|(_, _, chain)| shared_prefix(chain, blocks))
            .max()
            .unwrap_or(0)
    }

    /// Add a request's chain; its booking number.
    fn add_chain(&mut self, blocks: Vec<SequenceHash>) -> u64 {
        let booking = self.next_booking;
        self.next_booking += 1;
        if let Some(&first) = blocks.first() {
            self.distinct += (blocks.len() - self.held_prefix(&blocks)) as u64;
            self.chains.push((booking, first, blocks));
        }
        booking
    }

    /// Remove a request's chain; the chain, for reuse.
    fn remove_chain(&mut self, booking: u64) -> Option<Vec<SequenceHash>> {
        let at = self.chains.iter().position(|(b, _, _)| *b == booking)?;
        let (_, _, blocks) = self.chains.swap_remove(at);
        let own = blocks.len() - self.held_prefix(&blocks);
        self.distinct = self.distinct.saturating_sub(own as u64);
        Some(blocks)
    }
}

/// The length of the common prefix of two chains: they agree up to some position and differ
/// from there on, so a binary search finds it.
fn shared_prefix(a: &[SequenceHash], b: &[SequenceHash]) -> usize {
    // Blocks before `low` agree; blocks from `high` on differ.
    let (mut low, mut high) = (0, a.len().min(b.len()));
    if high > 0 && a[0] != b[0] {
        // Unrelated prompts: the usual case.
        return 0;
    }
    while low < high {
        let middle = low + (high - low) / 2;
        if a[middle] == b[middle] {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// The books of every worker, indexed by a dense slot so that the selector and the guards
/// reach a worker's book without a hash lookup.
#[derive(Debug, Default)]
struct Books {
    slot_of: HashMap<WorkerId, u32, foldhash::fast::RandomState>,
    /// Each slot's worker and book; a freed slot holds `None` until it is reused.
    books: Vec<Option<(WorkerId, WorkerBook)>>,
    free: Vec<u32>,
    /// Chains of finished requests, kept to hold the next requests' blocks without allocating.
    spare: Vec<Vec<SequenceHash>>,
    /// The first block of every active chain, with its slot and booking: a query finds the
    /// few workers whose active requests share its first block in one scan of this list.
    heads: Vec<Head>,
    /// Each slot's load as last changed, with the version of that change: a snapshot reads
    /// them side by side, and copies only those that changed since it last did.
    loads: Vec<(u64, WorkerLoad)>,
    /// The version the next change gets (never reused, so a reused slot reads as changed).
    next_version: u64,
    /// The latest changes, oldest first, by version and slot (consecutive versions): a
    /// snapshot that saw every change before the oldest copies only these loads.
    changes: VecDeque<(u64, u32)>,
}

/// At most this many changes are remembered for snapshots.
const CHANGES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Head {
    first: SequenceHash,
    slot: u32,
    booking: u64,
}

/// At most this many spare chains are kept.
const MAX_SPARE: usize = 64;

impl Books {
    fn slot_or_insert(&mut self, worker: WorkerId) -> u32 {
        if let Some(&slot) = self.slot_of.get(&worker) {
            return slot;
        }
        let entry = Some((worker, WorkerBook::default()));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.books[slot as usize] = entry;
                slot
            }
            None => {
                self.books.push(entry);
                (self.books.len() - 1) as u32
            }
        };
        self.slot_of.insert(worker, slot);
        self.publish(slot);
        slot
    }

    /// Record that the load of `slot` changed (a freed slot reads as no load).
    fn publish(&mut self, slot: u32) {
        let load = self
            .get_slot(slot)
            .map(|book| book.load)
            .unwrap_or_default();
        let at = slot as usize;
        if self.loads.len() <= at {
            self.loads.resize(at + 1, (0, WorkerLoad::default()));
        }
        self.next_version += 1;
        self.loads[at] = (self.next_version, load);
        if self.changes.len() == CHANGES {
            self.changes.pop_front();
        }
        self.changes.push_back((self.next_version, slot));
    }

    fn get_slot(&self, slot: u32) -> Option<&WorkerBook> {
        self.books
            .get(slot as usize)
            .and_then(|entry| entry.as_ref().map(|(_, book)| book))
    }

    fn book(&mut self, slot: u32) -> Option<&mut WorkerBook> {
        self.books
            .get_mut(slot as usize)
            .and_then(|entry| entry.as_mut().map(|(_, book)| book))
    }

    fn get(&self, worker: WorkerId) -> Option<&WorkerBook> {
        let slot = *self.slot_of.get(&worker)?;
        self.books[slot as usize].as_ref().map(|(_, book)| book)
    }

    fn book_chain(&mut self, slot: u32, blocks: Vec<SequenceHash>, charge: Charge) -> u64 {
        let Some(book) = self.book(slot) else {
            return 0;
        };
        book.load.active_requests = book.load.active_requests.saturating_add(charge.sequences);
        book.load.active_prefill_tokens += charge.prefill_tokens;
        book.load.expected_output_tokens += charge.expected_output_tokens;
        let first = blocks.first().copied();
        let booking = book.add_chain(blocks);
        book.refresh_blocks();
        self.publish(slot);
        if let Some(first) = first {
            self.heads.push(Head {
                first,
                slot,
                booking,
            });
        }
        booking
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
/// let booking = Booking {
///     blocks: vec![SequenceHash(7)],
///     prefill_tokens: 100,
///     ..Booking::default()
/// };
/// let mut guard = tracker.book(worker, booking);
/// assert_eq!(tracker.load(worker).active_prefill_tokens, 100);
/// guard.first_token(); // prefill is done
/// assert_eq!(tracker.load(worker).active_prefill_tokens, 0);
/// drop(guard); // the stream ended
/// assert_eq!(tracker.load(worker).active_requests, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoadTracker {
    books: Arc<Mutex<Books>>,
    /// Told of every booking made through [`book`](Self::book) and the selector (not of
    /// [`book_unobserved`](Self::book_unobserved)): how replicas share their load.
    observer: Option<Arc<dyn LoadObserver>>,
}

/// Told of a tracker's bookings, outside its lock (see [`crate::replicas`]).
pub(crate) trait LoadObserver: std::fmt::Debug + Send + Sync + 'static {
    /// A request was booked on `worker`; returns the key its later calls carry.
    fn booked(&self, worker: WorkerId, blocks: &[SequenceHash], charge: Charge) -> u64;
    /// The request of `key` produced its first token.
    fn prefilled(&self, key: u64);
    /// The request of `key` ended.
    fn released(&self, key: u64);
}

impl LoadTracker {
    /// A tracker with no load booked.
    pub fn new() -> Self {
        LoadTracker::default()
    }

    /// A tracker that tells `observer` of its bookings.
    pub(crate) fn observed(observer: Arc<dyn LoadObserver>) -> Self {
        LoadTracker {
            books: Arc::default(),
            observer: Some(observer),
        }
    }

    /// Book a request on `worker` without telling the observer: another replica's booking.
    pub(crate) fn book_unobserved(&self, worker: WorkerId, booking: Booking) -> LoadGuard {
        let charge = Charge::of(&booking);
        let mut books = self.books.lock();
        let slot = books.slot_or_insert(worker);
        let number = books.book_chain(slot, booking.blocks, charge);
        drop(books);
        self.guard(worker, slot, number, charge, None)
    }

    /// Book a request on `worker`; the load is released when the returned guard drops.
    pub fn book(&self, worker: WorkerId, booking: Booking) -> LoadGuard {
        let key = self
            .observer
            .as_ref()
            .map(|observer| observer.booked(worker, &booking.blocks, Charge::of(&booking)));
        let mut guard = self.book_unobserved(worker, booking);
        guard.key = key;
        guard
    }

    /// Book a request on the worker in `slot` (from [`register`](Self::register)), copying its
    /// blocks into a spare chain rather than a new allocation.
    pub(crate) fn book_slot(
        &self,
        worker: WorkerId,
        slot: u32,
        blocks: &[SequenceHash],
        charge: Charge,
    ) -> LoadGuard {
        let mut books = self.books.lock();
        let mut chain = books.spare.pop().unwrap_or_default();
        chain.extend_from_slice(blocks);
        let number = books.book_chain(slot, chain, charge);
        drop(books);
        let key = self
            .observer
            .as_ref()
            .map(|observer| observer.booked(worker, blocks, charge));
        self.guard(worker, slot, number, charge, key)
    }

    fn guard(
        &self,
        worker: WorkerId,
        slot: u32,
        booking: u64,
        charge: Charge,
        key: Option<u64>,
    ) -> LoadGuard {
        LoadGuard {
            key,
            tracker: self.clone(),
            worker,
            slot,
            booking,
            charge,
            prefilling: true,
        }
    }

    /// The load booked on `worker` now.
    pub fn load(&self, worker: WorkerId) -> WorkerLoad {
        self.books
            .lock()
            .get(worker)
            .map(|book| book.load)
            .unwrap_or_default()
    }

    /// The load of every worker with anything booked, or booked before.
    pub fn loads(&self) -> Vec<(WorkerId, WorkerLoad)> {
        self.books
            .lock()
            .books
            .iter()
            .flatten()
            .filter(|(_, book)| book.next_booking > 0)
            .map(|(worker, book)| (*worker, book.load))
            .collect()
    }

    /// The slot of `worker`'s book, made if it has none: it stays the worker's until
    /// [`forget_idle`](Self::forget_idle) drops the book.
    pub(crate) fn register(&self, worker: WorkerId) -> u32 {
        self.books.lock().slot_or_insert(worker)
    }

    /// Set the KV capacity of a worker the router knows (one inserted and not forgotten), in
    /// blocks of the router's block size: [`ExpectedTtft`](crate::ExpectedTtft) charges the
    /// blocks a request would hold past it there. `None` or 0 makes it unknown again. A
    /// worker the tracker does not know is left alone (a report that arrives before the
    /// worker joins, or after it left, makes no book; its next report sets it): whether it
    /// was known.
    ///
    /// ```
    /// use dynamo_core::{BlockSize, WorkerId};
    /// use dynamo_router::{RoundRobin, SelectorConfig, SharedIndex, WorkerSelector};
    ///
    /// let block_size = BlockSize::new(16)?;
    /// let config = SelectorConfig::new(block_size);
    /// let selector = WorkerSelector::new(config, RoundRobin::new(), SharedIndex::new(block_size));
    /// let worker = WorkerId::new(1);
    /// // Not a member yet: ignored.
    /// assert!(!selector.load().set_kv_capacity(worker, Some(512)));
    /// assert_eq!(selector.load().load(worker).kv_capacity_blocks, None);
    /// selector.insert_worker(worker);
    /// assert!(selector.load().set_kv_capacity(worker, Some(512)));
    /// assert_eq!(selector.load().load(worker).kv_capacity_blocks, Some(512));
    /// selector.remove_worker(worker); // it left: its capacity is forgotten with it
    /// assert_eq!(selector.load().load(worker).kv_capacity_blocks, None);
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    pub fn set_kv_capacity(&self, worker: WorkerId, blocks: Option<u64>) -> bool {
        let blocks = blocks.filter(|&blocks| blocks > 0);
        let mut books = self.books.lock();
        let Some(&slot) = books.slot_of.get(&worker) else {
            return false;
        };
        let Some(book) = books.book(slot) else {
            return false;
        };
        if book.load.kv_capacity_blocks != blocks {
            book.load.kv_capacity_blocks = blocks;
            books.publish(slot);
        }
        true
    }

    /// Drop the book of a worker that left, if nothing is booked on it any more (and its KV
    /// capacity in any case).
    pub(crate) fn forget_idle(&self, worker: WorkerId) {
        let mut books = self.books.lock();
        let Some(&slot) = books.slot_of.get(&worker) else {
            return;
        };
        if let Some(book) = books.book(slot)
            && book.load.kv_capacity_blocks.take().is_some()
        {
            books.publish(slot);
        }
        if books
            .book(slot)
            .is_some_and(|book| book.load.active_requests == 0)
        {
            books.slot_of.remove(&worker);
            books.books[slot as usize] = None;
            books.free.push(slot);
            books.publish(slot);
        }
    }

    /// `ended` sequences of a forked request on the worker of `slot` ended before the rest.
    fn end_sequences(&self, slot: u32, ended: u32) {
        let mut books = self.books.lock();
        if let Some(book) = books.book(slot) {
            book.load.active_requests = book.load.active_requests.saturating_sub(ended);
            book.refresh_blocks();
            books.publish(slot);
        }
    }

    fn end_prefill(&self, slot: u32, tokens: u64) {
        let mut books = self.books.lock();
        if let Some(book) = books.book(slot) {
            book.load.active_prefill_tokens =
                book.load.active_prefill_tokens.saturating_sub(tokens);
            books.publish(slot);
        }
    }

    fn release(&self, guard: &LoadGuard) {
        let mut books = self.books.lock();
        let books = &mut *books;
        let Some(Some((_, book))) = books.books.get_mut(guard.slot as usize) else {
            return;
        };
        let load = &mut book.load;
        let charge = guard.charge;
        load.active_requests = load.active_requests.saturating_sub(charge.sequences);
        if guard.prefilling {
            load.active_prefill_tokens = load
                .active_prefill_tokens
                .saturating_sub(charge.prefill_tokens);
        }
        load.expected_output_tokens = load
            .expected_output_tokens
            .saturating_sub(charge.expected_output_tokens);
        let removed = book.remove_chain(guard.booking);
        book.refresh_blocks();
        books.publish(guard.slot);
        if let Some(mut chain) = removed {
            if let Some(at) = books
                .heads
                .iter()
                .position(|head| head.slot == guard.slot && head.booking == guard.booking)
            {
                books.heads.swap_remove(at);
            }
            if books.spare.len() < MAX_SPARE {
                chain.clear();
                books.spare.push(chain);
            }
        }
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
    /// The worker's slot in the tracker, stable while a booking is on it.
    slot: u32,
    /// The booking's number in its worker's book.
    booking: u64,
    charge: Charge,
    prefilling: bool,
    /// The observer's key for the booking, when the tracker has an observer and it saw it.
    key: Option<u64>,
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
                .end_prefill(self.slot, self.charge.prefill_tokens);
            if let (Some(observer), Some(key)) = (&self.tracker.observer, self.key) {
                observer.prefilled(key);
            }
        }
    }

    /// `ended` of a forked request's sequences ended before the others: release their tails
    /// now. The last sequence stays booked until the guard drops. Other router replicas are not
    /// told; they see the request's sequences until it ends.
    pub(crate) fn end_sequences(&mut self, ended: u32) {
        let ended = ended.min(self.charge.sequences.saturating_sub(1));
        if ended > 0 {
            self.charge.sequences -= ended;
            self.tracker.end_sequences(self.slot, ended);
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.tracker.release(self);
        if let (Some(observer), Some(key)) = (&self.tracker.observer, self.key) {
            observer.released(key);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
