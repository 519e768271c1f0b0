//! The requests routed to one worker, oldest first: one record per request, not per block.
//!
//! Every block of every request routed to the worker is a touch, numbered in routing order;
//! the touches' hashes are kept in one queue, and each request is one record (when it was
//! routed, how many touches are its). Beside each touch is its [`Kind`]: whether the block map
//! must be told when it goes. The caller marks a touch stale when the worker touches its block
//! again ([`Records::mark_stale`]): a stale touch is skipped when it reaches the front, or when
//! its request expires, without a look-up in the block map, and the queue is compacted when
//! stale touches outnumber live blocks. A touch whose block the map holds inline needs no
//! look-up either: the map reads it as gone once it leaves the queue ([`Records::span`]).

use std::collections::VecDeque;
use std::time::Instant;

use dynamo_core::SequenceHash;

/// What becomes of a touch's block when the touch leaves the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The block's only holder, inline in the map: it is gone with the touch, no look-up
    /// needed (the map finds it dead; see [`Span`]).
    Inline,
    /// One of the block's listed holders: the worker is taken off the list by a look-up.
    Listed,
    /// No longer the block's latest touch: dropped without a look-up.
    Stale,
}

/// The touch numbers a worker's queue holds, modulo 2^32: `front` and the `len` after it. A
/// holder whose touch number is outside is gone (expired, trimmed, or its worker removed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) front: u32,
    pub(super) len: u32,
}

impl Span {
    /// Whether the touch numbered `touch` (modulo 2^32) is in the queue.
    pub(super) fn holds(self, touch: u32) -> bool {
        touch.wrapping_sub(self.front) < self.len
    }
}

/// The touches of one request.
#[derive(Debug, Clone, Copy)]
struct Record {
    routed_at: Instant,
    /// How many of the queue's touches, from where the previous record's end, are this one's.
    touches: u32,
}

/// A touch: the block and its number.
pub(super) type Touch = (SequenceHash, u64);

/// The requests routed to one worker, as touches in routing order.
#[derive(Debug, Default)]
pub(super) struct Records {
    records: VecDeque<Record>,
    /// The hashes of every record's touches, in order: `hashes[k]` is touch `front + k`.
    hashes: VecDeque<SequenceHash>,
    /// The kind of each touch of `hashes` (at the same place).
    kinds: VecDeque<Kind>,
    /// The number of the touch at the front of `hashes`.
    front: u64,
}

impl Records {
    /// No records, the first touch numbered `front` (a reused worker slot continues its
    /// numbering, so that the map's dead holders of the slot stay dead).
    pub(super) fn starting_at(front: u64) -> Self {
        Records {
            front,
            ..Records::default()
        }
    }

    /// The touch numbers held, as the map compares them.
    pub(super) fn span(&self) -> Span {
        Span {
            front: self.front as u32,
            len: self.hashes.len() as u32,
        }
    }

    /// The number the next touch gets.
    pub(super) fn next_touch(&self) -> u64 {
        self.front + self.hashes.len() as u64
    }

    /// The touches held, live or stale.
    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Append a request of `hashes` routed at `at`, each touch [`Kind::Inline`] until marked
    /// otherwise; its first touch is [`next_touch`](Self::next_touch) as it was before.
    pub(super) fn push(&mut self, hashes: &[SequenceHash], at: Instant) {
        if hashes.is_empty() {
            return;
        }
        self.hashes.extend(hashes.iter().copied());
        self.kinds
            .extend(std::iter::repeat_n(Kind::Inline, hashes.len()));
        self.records.push_back(Record {
            routed_at: at,
            touches: hashes.len() as u32,
        });
    }

    /// Mark the touch whose number is `number` modulo 2^32 (as holders keep it) stale: its
    /// worker touched its block again. A number not held is ignored.
    pub(super) fn mark_stale(&mut self, number: u32) {
        self.mark(number, Kind::Stale);
    }

    /// Mark the touch whose number is `number` modulo 2^32 [`Kind::Listed`]: its block's
    /// holders moved to a list. A number not held is ignored.
    pub(super) fn mark_listed(&mut self, number: u32) {
        self.mark(number, Kind::Listed);
    }

    fn mark(&mut self, number: u32, kind: Kind) {
        // The queue holds fewer than 2^32 touches, so the distance from the front is exact.
        let at = number.wrapping_sub(self.front as u32) as usize;
        if let Some(held) = self.kinds.get_mut(at) {
            *held = kind;
        }
    }

    /// Whether the front touch is marked stale; `None` when there is none.
    pub(super) fn front_is_stale(&self) -> Option<bool> {
        self.records.front()?;
        self.kinds.front().map(|&kind| kind == Kind::Stale)
    }

    /// If the front request was routed at a time `expired` says so of, pop its touches: push
    /// its [`Kind::Listed`] touches into `popped`, and count its [`Kind::Inline`] ones, which
    /// need no look-up; `None` if it was not.
    pub(super) fn pop_record_if(
        &mut self,
        expired: impl Fn(Instant) -> bool,
        popped: &mut Vec<Touch>,
    ) -> Option<usize> {
        let record = self.records.front()?;
        if !expired(record.routed_at) {
            return None;
        }
        let touches = record.touches as usize;
        self.records.pop_front();
        let mut inline = 0;
        for (k, kind) in self.kinds.drain(..touches).enumerate() {
            match kind {
                Kind::Inline => inline += 1,
                Kind::Listed => {
                    if let Some(&hash) = self.hashes.get(k) {
                        popped.push((hash, self.front + k as u64));
                    }
                }
                Kind::Stale => {}
            }
        }
        self.hashes.drain(..touches);
        self.front += touches as u64;
        Some(inline)
    }

    /// Pop the front touch, and its kind.
    pub(super) fn pop(&mut self) -> Option<(Touch, Kind)> {
        let record = self.records.front_mut()?;
        let hash = self.hashes.pop_front()?;
        let kind = self.kinds.pop_front().unwrap_or(Kind::Stale);
        record.touches -= 1;
        if record.touches == 0 {
            self.records.pop_front();
        }
        let number = self.front;
        self.front += 1;
        Some(((hash, number), kind))
    }

    /// The touches, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = Touch> + '_ {
        self.hashes.iter().copied().zip(self.front..)
    }

    /// Keep only the touches `keep` says are live, renumbered without gaps, with their kinds:
    /// `keep` is told each touch not marked stale and the number it will have. In place: the
    /// queues keep their buffers.
    pub(super) fn compact(&mut self, mut keep: impl FnMut(Touch, u64) -> bool) {
        let held = self.hashes.len();
        // Touches are read at `read` and the kept ones written back at `written` (never
        // ahead of `read`); records likewise.
        let (mut read, mut written, mut records) = (0, 0, 0);
        for r in 0..self.records.len() {
            let record = self.records[r];
            let mut kept = 0;
            for _ in 0..record.touches {
                if read == held {
                    break;
                }
                let hash = self.hashes[read];
                let number = self.front + read as u64;
                let renumbered = self.front + written as u64;
                let kind = self.kinds.get(read).copied().unwrap_or(Kind::Stale);
                if kind != Kind::Stale && keep((hash, number), renumbered) {
                    self.hashes[written] = hash;
                    self.kinds[written] = kind;
                    written += 1;
                    kept += 1;
                }
                read += 1;
            }
            if kept > 0 {
                self.records[records] = Record {
                    routed_at: record.routed_at,
                    touches: kept,
                };
                records += 1;
            }
        }
        self.hashes.truncate(written);
        self.kinds.truncate(written);
        self.records.truncate(records);
    }
}
