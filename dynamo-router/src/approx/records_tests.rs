//! [`Routed`] against a reference model: the live blocks in a list ordered by last touch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn hashes(ids: &[u64]) -> Vec<SequenceHash> {
    ids.iter().map(|&id| SequenceHash(id)).collect()
}

/// Touch `ids` at `at` in both, the positions already held taken from the model (as the
/// index answers them: a live touch before, or earlier in the list).
fn touch(routed: &mut Routed, model: &mut VecDeque<(u64, Instant)>, ids: &[u64], at: Instant) {
    let mut held = Vec::new();
    for (position, &id) in ids.iter().enumerate() {
        if model.iter().any(|&(m, _)| m == id) {
            held.push(position as u32);
        }
        model.retain(|&(m, _)| m != id);
        model.push_back((id, at));
    }
    routed.touch(&hashes(ids), &held, at);
}

#[test]
fn a_block_routed_again_lives_by_its_latest_touch() {
    let mut routed = Routed::default();
    let mut model = VecDeque::new();
    let t0 = Instant::now();
    touch(&mut routed, &mut model, &[1, 2, 3], t0);
    touch(
        &mut routed,
        &mut model,
        &[1, 4],
        t0 + Duration::from_secs(5),
    );
    assert_eq!(routed.len(), 4);
    let mut gone = Vec::new();
    routed.pop_expired(|at| at <= t0, &mut gone);
    assert_eq!(gone, hashes(&[2, 3]));
    assert_eq!(routed.oldest_first().collect::<Vec<_>>(), hashes(&[1, 4]));
    gone.clear();
    routed.pop_oldest(1, &mut gone);
    assert_eq!(gone, hashes(&[1]));
    assert_eq!(routed.len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    /// Route these blocks, this many milliseconds after the start.
    Touch(Vec<u64>, u64),
    /// Forget what was routed at or before this many milliseconds after the start.
    Expire(u64),
    /// Forget this many least recently routed blocks.
    Evict(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(0u64..10, 0..6), 0u64..40).prop_map(|(ids, at)| Op::Touch(ids, at)),
        1 => (0u64..40).prop_map(Op::Expire),
        1 => (0usize..4).prop_map(Op::Evict),
    ]
}

proptest! {
    /// Blocks are forgotten in the order of their latest touch, by time or by count, exactly
    /// as a list ordered by last touch forgets them, however the times and repeats come.
    #[test]
    fn behaves_like_a_list_ordered_by_last_touch(
        ops in prop::collection::vec(op(), 1..80),
        slack in 0usize..4,
    ) {
        let mut routed = Routed::with_slack(slack);
        let mut model: VecDeque<(u64, Instant)> = VecDeque::new();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        for op in ops {
            let mut gone = Vec::new();
            let mut expected = Vec::new();
            match op {
                Op::Touch(ids, at) => {
                    touch(&mut routed, &mut model, &ids, ms(at));
                    // Compacted as it grows: at most twice the live blocks, and the slack.
                    prop_assert!(routed.touches() <= 2 * model.len() + slack);
                }
                Op::Expire(cutoff) => {
                    routed.pop_expired(|at| at <= ms(cutoff), &mut gone);
                    while model.front().is_some_and(|&(_, at)| at <= ms(cutoff)) {
                        expected.extend(model.pop_front().map(|(id, _)| id));
                    }
                }
                Op::Evict(count) => {
                    routed.pop_oldest(count, &mut gone);
                    for _ in 0..count {
                        expected.extend(model.pop_front().map(|(id, _)| id));
                    }
                }
            }
            prop_assert_eq!(gone, hashes(&expected));
            prop_assert_eq!(routed.len(), model.len());
            prop_assert_eq!(
                routed.oldest_first().collect::<Vec<_>>(),
                model.iter().map(|&(id, _)| SequenceHash(id)).collect::<Vec<_>>()
            );
        }
    }
}
