//! Blocks in the order they were last routed, with O(1) touch and amortised O(1) eviction.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use dynamo_core::SequenceHash;

/// One touch of a block; stale once the block is touched again.
#[derive(Debug, Clone, Copy)]
struct Touch {
    hash: SequenceHash,
    routed_at: Instant,
    stamp: u64,
}

/// One worker's predicted blocks, least recently routed first.
///
/// Touches are appended to a queue, and each block remembers the stamp of its latest touch; a
/// touch whose stamp is no longer its block's is stale and skipped when it reaches the front.
/// A touch is then one hash-map update and an append, without relinking a list; the queue is
/// compacted when stale touches outnumber live blocks, so it stays within twice their number.
#[derive(Debug)]
pub(super) struct Recency {
    stamp_of: HashMap<SequenceHash, u64, foldhash::fast::RandomState>,
    touches: VecDeque<Touch>,
    next_stamp: u64,
    /// Stale touches tolerated beyond the number of live blocks before compacting.
    slack: usize,
}

impl Default for Recency {
    fn default() -> Self {
        Recency::with_slack(1024)
    }
}

impl Recency {
    fn with_slack(slack: usize) -> Self {
        Recency {
            stamp_of: HashMap::default(),
            touches: VecDeque::new(),
            next_stamp: 0,
            slack,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.stamp_of.len()
    }

    /// Record that every one of `hashes` was routed at `at`, in order: the last becomes the
    /// most recent.
    pub(super) fn touch_all(&mut self, hashes: &[SequenceHash], at: Instant) {
        // Look them all up first: the misses overlap, and the updates find the lines cached.
        let found = hashes.iter().fold(0, |all, hash| {
            all ^ self.stamp_of.get(hash).copied().unwrap_or(0)
        });
        std::hint::black_box(found);
        for &hash in hashes {
            self.touch(hash, at);
        }
    }

    /// Record that `hash` was routed at `at`: it becomes the most recent.
    pub(super) fn touch(&mut self, hash: SequenceHash, at: Instant) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.stamp_of.insert(hash, stamp);
        self.touches.push_back(Touch {
            hash,
            routed_at: at,
            stamp,
        });
        if self.touches.len() > 2 * self.stamp_of.len() + self.slack {
            let stamp_of = &self.stamp_of;
            self.touches
                .retain(|touch| stamp_of.get(&touch.hash) == Some(&touch.stamp));
        }
    }

    /// Drop stale touches from the front.
    #[cfg(test)]
    fn skip_stale(&mut self) {
        while let Some(front) = self.touches.front() {
            if self.stamp_of.get(&front.hash) == Some(&front.stamp) {
                return;
            }
            self.touches.pop_front();
        }
    }

    /// The least recently routed block and when it was routed.
    #[cfg(test)]
    fn oldest(&mut self) -> Option<(SequenceHash, Instant)> {
        self.skip_stale();
        self.touches
            .front()
            .map(|touch| (touch.hash, touch.routed_at))
    }

    /// Forget the least recently routed block if `expired` says so of the time it was routed.
    pub(super) fn pop_oldest_if(
        &mut self,
        expired: impl Fn(Instant) -> bool,
    ) -> Option<SequenceHash> {
        loop {
            let front = *self.touches.front()?;
            match self.stamp_of.entry(front.hash) {
                Entry::Occupied(live) if *live.get() == front.stamp => {
                    if !expired(front.routed_at) {
                        return None;
                    }
                    live.remove();
                    self.touches.pop_front();
                    return Some(front.hash);
                }
                // A stale touch: the block was touched again later, or is gone.
                _ => {
                    self.touches.pop_front();
                }
            }
        }
    }

    /// The live blocks, least recently routed first.
    pub(super) fn oldest_first(&self) -> impl Iterator<Item = SequenceHash> + '_ {
        self.touches
            .iter()
            .filter(|touch| self.stamp_of.get(&touch.hash) == Some(&touch.stamp))
            .map(|touch| touch.hash)
    }

    /// Forget the least recently routed block.
    pub(super) fn pop_oldest(&mut self) -> Option<SequenceHash> {
        self.pop_oldest_if(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_moves_a_block_to_the_newest_end() {
        let mut recency = Recency::default();
        let t0 = Instant::now();
        for id in 1..=3 {
            recency.touch(SequenceHash(id), t0);
        }
        recency.touch(SequenceHash(1), t0 + std::time::Duration::from_secs(1));
        assert_eq!(recency.len(), 3);
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(2)));
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(3)));
        assert_eq!(recency.oldest().map(|(h, _)| h), Some(SequenceHash(1)));
        assert_eq!(recency.pop_oldest(), Some(SequenceHash(1)));
        assert_eq!(recency.pop_oldest(), None);
        recency.touch(SequenceHash(9), t0);
        assert_eq!(recency.oldest().map(|(h, _)| h), Some(SequenceHash(9)));
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_list_ordered_by_last_touch(
            ops in proptest::collection::vec((0u64..8, proptest::bool::weighted(0.25)), 1..200),
            slack in 0usize..4,
        ) {
            let mut recency = Recency::with_slack(slack);
            // Each live block with the time of its last touch, least recent first.
            let mut model: std::collections::VecDeque<(u64, Instant)> = Default::default();
            let t0 = Instant::now();
            for (step, (id, pop)) in ops.into_iter().enumerate() {
                if pop && id % 2 == 0 {
                    proptest::prop_assert_eq!(
                        recency.pop_oldest().map(|h| h.0),
                        model.pop_front().map(|(id, _)| id)
                    );
                } else if pop {
                    // Only a block routed at or before this cutoff goes.
                    let cutoff = t0 + std::time::Duration::from_millis(step as u64 / 2);
                    let expected = match model.front() {
                        Some(&(id, at)) if at <= cutoff => {
                            model.pop_front();
                            Some(id)
                        }
                        _ => None,
                    };
                    proptest::prop_assert_eq!(
                        recency.pop_oldest_if(|at| at <= cutoff).map(|h| h.0),
                        expected
                    );
                } else {
                    let at = t0 + std::time::Duration::from_millis(step as u64);
                    recency.touch(SequenceHash(id), at);
                    model.retain(|&(m, _)| m != id);
                    model.push_back((id, at));
                    // Compacted as it grows: at most twice the live blocks, and the slack.
                    proptest::prop_assert!(recency.touches.len() <= 2 * model.len() + slack);
                }
                proptest::prop_assert_eq!(recency.len(), model.len());
                proptest::prop_assert_eq!(
                    recency.oldest().map(|(h, at)| (h.0, at)),
                    model.front().copied()
                );
            }
        }
    }
}
