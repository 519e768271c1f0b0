//! Load bookkeeping against a reference recomputed from the live bookings.
//!
//! Prompts are chains of a few distinct blocks each, so that bookings often share prefixes
//! of every length; some requests fork into several sequences, each holding its own tail.

use std::collections::HashSet;

use dynamo_core::{BlockHasher, BlockSize, SequenceHash, WorkerId};
use dynamo_router::{Booking, LoadGuard, LoadTracker, WorkerLoad};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Book {
        worker: u64,
        blocks: Vec<u32>,
        prefill: u64,
        output: u64,
        sequences: u32,
    },
    FirstToken(usize),
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u64..3,
            prop::collection::vec(0u32..3, 0..6),
            0u64..1000,
            0u64..50,
            prop_oneof![3 => Just(1u32), 1 => 0u32..5],
        )
            .prop_map(|(worker, blocks, prefill, output, sequences)| Op::Book {
                worker,
                blocks,
                prefill,
                output,
                sequences,
            }),
        any::<usize>().prop_map(Op::FirstToken),
        any::<usize>().prop_map(Op::Drop),
    ]
}

/// The sequence hashes of a prompt of one-token blocks.
fn chain(tokens: &[u32]) -> Vec<SequenceHash> {
    BlockHasher::new(BlockSize::new(1).expect("a block size")).sequence_hashes(tokens)
}

struct Live {
    guard: LoadGuard,
    worker: u64,
    booking: Booking,
    prefilling: bool,
}

fn reference(live: &[Live], worker: u64) -> WorkerLoad {
    let mine: Vec<&Live> = live.iter().filter(|l| l.worker == worker).collect();
    let distinct: HashSet<SequenceHash> = mine
        .iter()
        .flat_map(|l| l.booking.blocks.iter().copied())
        .collect();
    // A booking of 0 sequences counts as one.
    let sequences: u32 = mine.iter().map(|l| l.booking.sequences.max(1)).sum();
    WorkerLoad {
        active_requests: sequences,
        active_prefill_tokens: mine
            .iter()
            .filter(|l| l.prefilling)
            .map(|l| l.booking.prefill_tokens)
            .sum(),
        active_decode_blocks: distinct.len() as u64 + u64::from(sequences),
        expected_output_tokens: mine.iter().map(|l| l.booking.expected_output_tokens).sum(),
        kv_capacity_blocks: None,
    }
}

proptest! {
    #[test]
    fn booked_load_equals_the_live_bookings(ops in prop::collection::vec(op(), 1..80)) {
        let tracker = LoadTracker::new();
        let mut live: Vec<Live> = Vec::new();
        for op in ops {
            match op {
                Op::Book { worker, blocks, prefill, output, sequences } => {
                    let booking = Booking {
                        blocks: chain(&blocks),
                        prefill_tokens: prefill,
                        expected_output_tokens: output,
                        sequences,
                    };
                    let guard = tracker.book(WorkerId::new(worker), booking.clone());
                    live.push(Live { guard, worker, booking, prefilling: true });
                }
                Op::FirstToken(i) if !live.is_empty() => {
                    let n = live.len();
                    let l = &mut live[i % n];
                    l.guard.first_token();
                    l.prefilling = false;
                }
                Op::Drop(i) if !live.is_empty() => {
                    let n = live.len();
                    drop(live.swap_remove(i % n).guard);
                }
                _ => {}
            }
            for worker in 0..3 {
                prop_assert_eq!(tracker.load(WorkerId::new(worker)), reference(&live, worker));
            }
        }
        live.clear();
        for worker in 0..3 {
            prop_assert_eq!(tracker.load(WorkerId::new(worker)), WorkerLoad::default());
        }
    }
}
