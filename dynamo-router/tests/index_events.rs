//! The index driven through its public API: gaps, rejections, and readers during writes.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::sync::{Arc, Mutex};

use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
use dynamo_router::{IndexError, KvIndex, ResyncHook, SharedIndex};

const WORKER: WorkerId = WorkerId::new(1);

fn size() -> BlockSize {
    BlockSize::new(4).unwrap()
}

fn stored(event_id: u64, tokens: &[u32]) -> KvEvent {
    KvEvent {
        worker: WORKER,
        event_id,
        tier: StorageTier::Device,
        data: KvEventData::Stored {
            parent: None,
            block_size: size(),
            blocks: BlockHasher::new(size()).hash_blocks(tokens),
        },
    }
}

#[derive(Default)]
struct RecordingHook(Mutex<Vec<(WorkerId, u64, u64)>>);

impl ResyncHook for RecordingHook {
    fn request_resync(&self, worker: WorkerId, expected: u64, received: u64) {
        self.0.lock().unwrap().push((worker, expected, received));
    }
}

#[test]
fn a_gap_in_event_ids_requests_a_resync_and_duplicates_are_rejected() {
    let hook = Arc::new(RecordingHook::default());
    let mut index = KvIndex::new(size()).with_resync_hook(hook.clone());
    index.apply(&stored(0, &[1, 2, 3, 4])).unwrap();
    index.apply(&stored(3, &[5, 6, 7, 8])).unwrap();
    assert_eq!(*hook.0.lock().unwrap(), [(WORKER, 1, 3)]);
    let err = index.apply(&stored(3, &[9, 9, 9, 9])).unwrap_err();
    assert!(matches!(
        err,
        IndexError::StaleEvent {
            last_applied: 3,
            received: 3,
            ..
        }
    ));
    assert_eq!(index.resident_blocks(), 2);
}

#[test]
fn a_block_size_mismatch_is_an_error_and_changes_nothing() {
    let mut index = KvIndex::new(BlockSize::new(16).unwrap());
    let err = index.apply(&stored(0, &[1, 2, 3, 4])).unwrap_err();
    assert_eq!(err.name(), "block_size_mismatch");
    assert_eq!(index.unique_blocks(), 0);
}

#[test]
fn removing_a_worker_forgets_its_blocks_and_history() {
    let mut index = KvIndex::new(size());
    index.apply(&stored(5, &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
    assert_eq!(index.remove_worker(WORKER), 2);
    assert_eq!(index.unique_blocks(), 0);
    // A restarted worker may count from 0 again.
    index.apply(&stored(0, &[1, 2, 3, 4])).unwrap();
}

#[test]
fn readers_see_a_consistent_index_while_events_stream_in() {
    let index = SharedIndex::new(size());
    let hasher = BlockHasher::new(size());
    let prompt: Vec<u32> = (0..4 * 200).collect();
    let query = hasher.sequence_hashes(&prompt);
    std::thread::scope(|scope| {
        let writer = index.clone();
        let blocks = hasher.hash_blocks(&prompt);
        scope.spawn(move || {
            // Grow worker 1's cached prefix one block per event.
            for (i, block) in blocks.iter().enumerate() {
                let parent = i.checked_sub(1).map(|p| blocks[p].sequence);
                let event = KvEvent {
                    worker: WORKER,
                    event_id: i as u64,
                    tier: StorageTier::Device,
                    data: KvEventData::Stored {
                        parent,
                        block_size: size(),
                        blocks: vec![*block],
                    },
                };
                writer.apply(&event).unwrap();
            }
        });
        for _ in 0..2 {
            let reader = index.clone();
            let query = &query;
            scope.spawn(move || {
                let mut last = 0;
                for _ in 0..2_000 {
                    let depth = reader.overlaps(query).get(WORKER).device;
                    assert!(depth >= last, "a prefix only grows here: {depth} < {last}");
                    last = depth;
                }
            });
        }
    });
    assert_eq!(index.overlaps(&query).get(WORKER).device, 200);
}

#[test]
fn a_restarted_worker_counting_from_zero_again_starts_empty() {
    let mut index = KvIndex::new(size());
    index.apply(&stored(0, &[1, 2, 3, 4])).unwrap();
    index.apply(&stored(1, &[5, 6, 7, 8])).unwrap();
    // The worker's process restarted: its cache is empty and its ids begin again.
    index.apply(&stored(0, &[9, 9, 9, 9])).unwrap();
    assert_eq!(index.resident_blocks(), 1);
    index.apply(&stored(1, &[8, 8, 8, 8])).unwrap();
    assert_eq!(index.resident_blocks(), 2);
}

#[test]
fn a_gap_asks_the_worker_through_a_channel_and_its_snapshot_replaces_what_was_known() {
    let (requests, mut asked) = tokio::sync::mpsc::channel(4);
    let mut index = KvIndex::new(size()).with_resync_hook(Arc::new(requests));
    index.apply(&stored(0, &[1, 2, 3, 4])).unwrap();
    // Events 1 and 2 (which removed [1, 2, 3, 4] and stored [5, 6, 7, 8]) were lost.
    index.apply(&stored(3, &[9, 9, 9, 9])).unwrap();
    let request = asked.try_recv().unwrap();
    assert_eq!(
        (request.worker, request.expected, request.received),
        (WORKER, 1, 3)
    );

    let held: Vec<u32> = [5, 6, 7, 8, 9, 9, 9, 9].into();
    let snapshot = KvEvent {
        worker: WORKER,
        event_id: 4,
        tier: StorageTier::Device,
        data: KvEventData::Snapshot {
            block_size: size(),
            blocks: [&held[..4], &held[4..]]
                .iter()
                .flat_map(|tokens| BlockHasher::new(size()).hash_blocks(tokens))
                .collect(),
        },
    };
    index.apply(&snapshot).unwrap();
    let overlap = |tokens: &[u32]| {
        let hashes = BlockHasher::new(size()).sequence_hashes(tokens);
        index.overlaps(&hashes).get(WORKER).device
    };
    assert_eq!(overlap(&[1, 2, 3, 4]), 0, "the lost removal is applied");
    assert_eq!(overlap(&[5, 6, 7, 8]), 1, "the lost store is applied");
    assert_eq!(overlap(&[9, 9, 9, 9]), 1);
    assert!(asked.try_recv().is_err(), "no gap, no second request");
}
