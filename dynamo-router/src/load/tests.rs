//! Held prefixes and snapshots against a set of the active blocks.

use std::collections::HashSet;

use dynamo_core::{BlockHasher, BlockSize};
use proptest::prelude::*;

use super::*;
use crate::index::TierOverlap;

/// The sequence hashes of a prompt of one-token blocks.
fn chain(tokens: &[u32]) -> Vec<SequenceHash> {
    BlockHasher::new(BlockSize::new(1).expect("a block size")).sequence_hashes(tokens)
}

fn prompt() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..3, 0..7)
}

proptest! {
    /// The held prefix is the run of leading blocks found in any active booking, and
    /// shared prefixes are found by binary search as a scan would find them.
    #[test]
    fn held_prefixes_match_a_set_of_the_active_blocks(
        active in prop::collection::vec(prompt(), 0..6),
        query in prompt(),
    ) {
        let tracker = LoadTracker::new();
        let worker = WorkerId::new(0);
        let chains: Vec<Vec<SequenceHash>> = active.iter().map(|p| chain(p)).collect();
        let _guards: Vec<LoadGuard> = chains
            .iter()
            .map(|blocks| tracker.book(worker, Booking { blocks: blocks.clone(), ..Booking::default() }))
            .collect();
        let held: HashSet<SequenceHash> = chains.iter().flatten().copied().collect();
        let query = chain(&query);
        let expected = query.iter().take_while(|hash| held.contains(hash)).count();
        // Another worker, booked with the same chains, must not count.
        let other_worker = WorkerId::new(1);
        let _others: Vec<LoadGuard> = chains
            .iter()
            .map(|blocks| tracker.book(other_worker, Booking { blocks: blocks.clone(), ..Booking::default() }))
            .collect();
        let workers = [worker, other_worker, WorkerId::new(2)];
        let slots: Vec<u32> = workers.iter().map(|&w| tracker.register(w)).collect();
        let mut cache = StateCache::default();
        tracker.snapshot(&workers, &slots, &mut cache, &query);
        let states = cache.states();
        prop_assert_eq!(states[0].in_flight as usize, expected);
        prop_assert_eq!(states[1].in_flight as usize, expected);
        prop_assert_eq!(states[2].in_flight, 0);
        prop_assert_eq!(states[0].load, tracker.load(worker));
        for other in &chains {
            let scanned = other.iter().zip(&query).take_while(|(a, b)| a == b).count();
            prop_assert_eq!(shared_prefix(other, &query), scanned);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Book this prompt on this worker, with these prefill tokens.
    Book(usize, Vec<u32>, u64),
    /// The first token of the booking at this position (modulo the open ones).
    FirstToken(usize),
    /// The booking at this position ends.
    Release(usize),
    /// A decision: snapshot for this prompt, then mark the cached prefix of a worker.
    Decide(Vec<u32>, usize, u32),
    /// This many requests booked on this worker and released, two changes each: more than
    /// the tracker remembers, at times.
    Burst(usize, usize),
    /// This worker reports this KV capacity.
    Capacity(usize, Option<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, prompt(), 0u64..50).prop_map(|(w, p, t)| Op::Book(w, p, t)),
        1 => (0usize..8).prop_map(Op::FirstToken),
        2 => (0usize..8).prop_map(Op::Release),
        3 => (prompt(), 0usize..3, 0u32..4).prop_map(|(p, w, c)| Op::Decide(p, w, c)),
        1 => (0usize..3, 0usize..50).prop_map(|(w, n)| Op::Burst(w, n)),
        1 => (0usize..3, prop::option::of(0u64..3)).prop_map(|(w, c)| Op::Capacity(w, c)),
    ]
}

proptest! {
    /// A state cache kept from one decision to the next holds what a fresh snapshot holds,
    /// whatever was booked, prefilled, released or reported in between (fewer changes than the tracker
    /// remembers, or more).
    #[test]
    fn a_kept_snapshot_equals_a_fresh_one(ops in prop::collection::vec(op(), 1..40)) {
        let tracker = LoadTracker::new();
        let workers = [WorkerId::new(0), WorkerId::new(1), WorkerId::new(2)];
        let slots: Vec<u32> = workers.iter().map(|&w| tracker.register(w)).collect();
        let mut kept = StateCache::default();
        let mut guards: Vec<LoadGuard> = Vec::new();
        for op in ops {
            match op {
                Op::Book(w, prompt, prefill_tokens) => {
                    let booking = Booking {
                        blocks: chain(&prompt),
                        prefill_tokens,
                        expected_output_tokens: 1,
                        ..Booking::default()
                    };
                    guards.push(tracker.book(workers[w], booking));
                }
                Op::FirstToken(i) if !guards.is_empty() => {
                    let at = i % guards.len();
                    guards[at].first_token();
                }
                Op::Release(i) if !guards.is_empty() => {
                    let at = i % guards.len();
                    drop(guards.swap_remove(at));
                }
                Op::Decide(prompt, w, cached) => {
                    let query = chain(&prompt);
                    tracker.snapshot(&workers, &slots, &mut kept, &query);
                    let mut fresh = StateCache::default();
                    tracker.snapshot(&workers, &slots, &mut fresh, &query);
                    prop_assert_eq!(kept.states(), fresh.states());
                    for (state, &worker) in kept.states().iter().zip(&workers) {
                        prop_assert_eq!(state.load, tracker.load(worker));
                    }
                    kept.set_cached(w, TierOverlap { device: cached, ..TierOverlap::default() });
                }
                Op::Burst(w, n) => {
                    let burst: Vec<LoadGuard> = (0..n)
                        .map(|_| tracker.book(workers[w], Booking { prefill_tokens: 1, ..Booking::default() }))
                        .collect();
                    drop(burst);
                }
                Op::Capacity(w, capacity) => {
                    prop_assert!(tracker.set_kv_capacity(workers[w], capacity));
                    let known = capacity.filter(|&blocks| blocks > 0);
                    prop_assert_eq!(tracker.load(workers[w]).kv_capacity_blocks, known);
                }
                _ => {}
            }
        }
    }
}
