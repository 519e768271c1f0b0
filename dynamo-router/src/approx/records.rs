//! One worker's predictions as the requests routed to it: one entry per request, not per block.
//!
//! Every block of every request routed to the worker is a touch, numbered in routing order; the
//! touches are kept in one queue of hashes, and each request is one record (when it was routed,
//! how many touches are its). A block's latest touch is the one that counts: a block touched
//! only once needs nothing more, and only a block touched again (a prefix routed to the same
//! worker again) is noted in a small map with the number of its latest touch. Recording a
//! request is then an append and a map update per block touched again; expiry pops whole
//! records, and a popped touch is the block's last one when the map does not name a later one.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use dynamo_core::SequenceHash;

/// The touches of one request.
#[derive(Debug, Clone, Copy)]
struct Record {
    routed_at: Instant,
    /// How many of the queue's touches, from where the previous record's end, are this one's.
    touches: u32,
}

/// One worker's predicted blocks, least recently routed first.
#[derive(Debug)]
pub(super) struct Routed {
    records: VecDeque<Record>,
    /// The hashes of every record's touches, in order: `hashes[k]` is touch `front + k`.
    hashes: VecDeque<SequenceHash>,
    /// The number of the touch at the front of `hashes`.
    front: u64,
    /// Blocks touched again while an earlier touch was live: the number of their latest touch.
    /// A block not named here has one live touch.
    latest: HashMap<SequenceHash, u64, foldhash::fast::RandomState>,
    /// Blocks whose latest touch is in the queue.
    live: usize,
    /// Stale touches tolerated beyond the number of live blocks before compacting.
    slack: usize,
}

impl Default for Routed {
    fn default() -> Self {
        Routed::with_slack(1024)
    }
}

impl Routed {
    pub(super) fn with_slack(slack: usize) -> Self {
        Routed {
            records: VecDeque::new(),
            hashes: VecDeque::new(),
            front: 0,
            latest: HashMap::default(),
            live: 0,
            slack,
        }
    }

    /// The number of live blocks.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Record that `hashes` were routed at `at`, in order (the last becomes the most recent);
    /// `held` lists, ascending, the positions of `hashes` whose block already had a live touch
    /// (from an earlier request, or earlier in `hashes`).
    pub(super) fn touch(&mut self, hashes: &[SequenceHash], held: &[u32], at: Instant) {
        let first = self.front + self.hashes.len() as u64;
        for &position in held {
            if let Some(&hash) = hashes.get(position as usize) {
                self.latest.insert(hash, first + u64::from(position));
            }
        }
        self.live += hashes.len() - held.len().min(hashes.len());
        self.hashes.extend(hashes.iter().copied());
        if !hashes.is_empty() {
            self.records.push_back(Record {
                routed_at: at,
                touches: hashes.len() as u32,
            });
        }
        if self.hashes.len() > 2 * self.live + self.slack {
            self.compact();
        }
    }

    /// Whether touch `number` of `hash` is its block's latest; forgets the note of it if so.
    fn take_if_latest(&mut self, hash: SequenceHash, number: u64) -> bool {
        if self.latest.is_empty() {
            return true;
        }
        match self.latest.get(&hash) {
            None => true,
            Some(&latest) if latest == number => {
                self.latest.remove(&hash);
                true
            }
            Some(_) => false,
        }
    }

    /// Pop the front touch; its hash if it was its block's latest (the block is then gone).
    fn pop_touch(&mut self) -> Option<Option<SequenceHash>> {
        let record = self.records.front_mut()?;
        let hash = self.hashes.pop_front()?;
        record.touches -= 1;
        if record.touches == 0 {
            self.records.pop_front();
        }
        let number = self.front;
        self.front += 1;
        if self.take_if_latest(hash, number) {
            self.live -= 1;
            return Some(Some(hash));
        }
        Some(None)
    }

    /// Whether the front touch is its block's latest.
    fn front_is_latest(&self) -> bool {
        match self.hashes.front() {
            Some(hash) => self
                .latest
                .get(hash)
                .is_none_or(|&latest| latest == self.front),
            None => false,
        }
    }

    /// Forget, into `gone`, every block whose latest touch is older than every live one and
    /// was routed at a time `expired` says so of, least recent first.
    pub(super) fn pop_expired(
        &mut self,
        expired: impl Fn(Instant) -> bool,
        gone: &mut Vec<SequenceHash>,
    ) {
        while let Some(record) = self.records.front() {
            if expired(record.routed_at) {
                for _ in 0..record.touches {
                    if let Some(Some(hash)) = self.pop_touch() {
                        gone.push(hash);
                    }
                }
            } else if self.front_is_latest() {
                return;
            } else {
                // A stale touch: its block was touched again later.
                self.pop_touch();
            }
        }
    }

    /// Forget, into `gone`, the `count` least recently routed blocks.
    pub(super) fn pop_oldest(&mut self, count: usize, gone: &mut Vec<SequenceHash>) {
        let mut left = count;
        while left > 0 {
            match self.pop_touch() {
                Some(Some(hash)) => {
                    gone.push(hash);
                    left -= 1;
                }
                Some(None) => {}
                None => return,
            }
        }
    }

    /// The live blocks, least recently routed first.
    pub(super) fn oldest_first(&self) -> impl Iterator<Item = SequenceHash> + '_ {
        self.hashes
            .iter()
            .zip(self.front..)
            .filter(|&(hash, number)| self.latest.get(hash).is_none_or(|&l| l == number))
            .map(|(&hash, _)| hash)
    }

    /// Drop the stale touches, renumbering the live ones, and the records left empty.
    fn compact(&mut self) {
        let mut hashes = VecDeque::with_capacity(self.live + self.slack);
        let mut records = VecDeque::with_capacity(self.records.len());
        let mut number = self.front;
        for record in std::mem::take(&mut self.records) {
            let mut kept = 0;
            for _ in 0..record.touches {
                let Some(hash) = self.hashes.pop_front() else {
                    break;
                };
                let renumbered = self.front + hashes.len() as u64;
                match self.latest.get_mut(&hash) {
                    None => {}
                    Some(latest) if *latest == number => *latest = renumbered,
                    Some(_) => {
                        number += 1;
                        continue;
                    }
                }
                number += 1;
                hashes.push_back(hash);
                kept += 1;
            }
            if kept > 0 {
                records.push_back(Record {
                    routed_at: record.routed_at,
                    touches: kept,
                });
            }
        }
        self.hashes = hashes;
        self.records = records;
    }

    /// The touches held, live or stale (for tests).
    #[cfg(test)]
    pub(super) fn touches(&self) -> usize {
        self.hashes.len()
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
