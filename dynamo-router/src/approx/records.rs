//! The requests routed to one worker, oldest first: one record per request, not per block.
//!
//! Every block of every request routed to the worker is a touch, numbered in routing order;
//! the touches' hashes are kept in one queue, and each request is one record (when it was
//! routed, how many touches are its). Whether a touch is still its block's latest is for the
//! caller to say (the block map keeps each holder's latest touch number), and the caller marks a
//! touch stale when the worker touches its block again ([`Records::mark_stale`]): a stale touch
//! is skipped when it reaches the front, or when its request expires, without a look-up in the
//! block map, and the queue is compacted when stale touches outnumber live blocks.

use std::collections::VecDeque;
use std::time::Instant;

use dynamo_core::SequenceHash;

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
    /// Whether each touch of `hashes` (at the same place) is known to be stale: its worker
    /// touched its block again since.
    stale: VecDeque<bool>,
    /// The number of the touch at the front of `hashes`.
    front: u64,
}

impl Records {
    /// The number the next touch gets.
    pub(super) fn next_touch(&self) -> u64 {
        self.front + self.hashes.len() as u64
    }

    /// The touches held, live or stale.
    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Append a request of `hashes` routed at `at`; its first touch is
    /// [`next_touch`](Self::next_touch) as it was before.
    pub(super) fn push(&mut self, hashes: &[SequenceHash], at: Instant) {
        if hashes.is_empty() {
            return;
        }
        self.hashes.extend(hashes.iter().copied());
        self.stale.extend(std::iter::repeat_n(false, hashes.len()));
        self.records.push_back(Record {
            routed_at: at,
            touches: hashes.len() as u32,
        });
    }

    /// Mark the touch whose number is `number` modulo 2^32 (as holders keep it) stale: its
    /// worker touched its block again. A number not held is ignored.
    pub(super) fn mark_stale(&mut self, number: u32) {
        // The queue holds fewer than 2^32 touches, so the distance from the front is exact.
        let at = number.wrapping_sub(self.front as u32) as usize;
        if let Some(stale) = self.stale.get_mut(at) {
            *stale = true;
        }
    }

    /// Whether the front touch is marked stale; `None` when there is none.
    pub(super) fn front_is_stale(&self) -> Option<bool> {
        self.records.front()?;
        self.stale.front().copied()
    }

    /// If the front request was routed at a time `expired` says so of, pop its touches, and
    /// push those not marked stale into `popped`; whether it was.
    pub(super) fn pop_record_if(
        &mut self,
        expired: impl Fn(Instant) -> bool,
        popped: &mut Vec<Touch>,
    ) -> bool {
        let Some(record) = self.records.front() else {
            return false;
        };
        if !expired(record.routed_at) {
            return false;
        }
        let touches = record.touches as usize;
        self.records.pop_front();
        let numbered = self.hashes.drain(..touches).zip(self.front..);
        popped.extend(
            numbered
                .zip(self.stale.drain(..touches))
                .filter(|&(_, stale)| !stale)
                .map(|(touch, _)| touch),
        );
        self.front += touches as u64;
        true
    }

    /// Pop the front touch, and whether it was marked stale.
    pub(super) fn pop(&mut self) -> Option<(Touch, bool)> {
        let record = self.records.front_mut()?;
        let hash = self.hashes.pop_front()?;
        let stale = self.stale.pop_front().unwrap_or(false);
        record.touches -= 1;
        if record.touches == 0 {
            self.records.pop_front();
        }
        let number = self.front;
        self.front += 1;
        Some(((hash, number), stale))
    }

    /// The touches, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = Touch> + '_ {
        self.hashes.iter().copied().zip(self.front..)
    }

    /// Keep only the touches `keep` says are live, renumbered without gaps: `keep` is told
    /// each touch not marked stale and the number it will have. In place: the queues keep
    /// their buffers.
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
                let stale = self.stale.get(read).copied().unwrap_or(false);
                if !stale && keep((hash, number), renumbered) {
                    self.hashes[written] = hash;
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
        self.records.truncate(records);
        self.stale.clear();
        self.stale.resize(written, false);
    }
}
