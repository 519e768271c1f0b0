//! The device tier (G1) through `cudarc`: on a machine with an NVIDIA GPU, the shared suite and
//! a round trip of large blocks; on one without, that opening says so with
//! [`Error::Unavailable`] instead of panicking.
//!
//! Whether a GPU should be usable is read from the machine, not from the store under test: the
//! NVIDIA driver's control device `/dev/nvidiactl` exists. Where it does, a store that fails to
//! open fails the test.

mod common;

use std::path::Path;

use common::{CAPACITY, block, conformance};
use dynamo_core::{SequenceHash, StorageTier};
use dynamo_kvbm::{BlockStore, DeviceStore, Error};

fn gpu_expected() -> bool {
    Path::new("/dev/nvidiactl").exists()
}

/// A store on GPU 0, or `None` after checking that its absence is reported as it should be.
fn open(block_bytes: usize, capacity: usize) -> Option<DeviceStore> {
    match DeviceStore::open(0, block_bytes, capacity) {
        Ok(store) => Some(store),
        Err(Error::Unavailable { tier, reason }) if !gpu_expected() => {
            assert_eq!(tier, StorageTier::Device);
            assert!(!reason.is_empty());
            eprintln!("no GPU here, as expected: {reason}");
            None
        }
        Err(other) => panic!("a GPU driver is present but the store does not open: {other}"),
    }
}

#[test]
fn device_store_behaves_like_a_block_store_or_is_unavailable() {
    for size in [1, 1000, 8192] {
        if let Some(store) = open(size, CAPACITY) {
            assert_eq!(store.tier(), StorageTier::Device);
            conformance(&store);
        }
    }
}

#[test]
fn opening_without_a_gpu_fails_the_same_way_every_time() {
    if gpu_expected() {
        return;
    }
    // The driver is looked for once per process; later opens give the same answer without
    // looking (or panicking inside `cudarc`) again.
    let reasons: Vec<String> = (0..3)
        .map(|_| match DeviceStore::open(0, 4096, 2) {
            Err(Error::Unavailable {
                tier: StorageTier::Device,
                reason,
            }) => reason,
            other => panic!("no GPU here, yet: {other:?}"),
        })
        .collect();
    assert!(
        reasons.iter().all(|reason| reason == &reasons[0]),
        "{reasons:?}"
    );
}

#[test]
fn a_gpu_that_is_not_there_is_unavailable() {
    let opened = DeviceStore::open(10_000, 4096, 2);
    assert!(
        matches!(opened, Err(Error::Unavailable { .. })),
        "{opened:?}"
    );
}

#[test]
fn a_shape_it_cannot_hold_is_refused_before_the_driver_is_asked() {
    assert!(matches!(
        DeviceStore::open(0, 0, 4),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        DeviceStore::open(0, usize::MAX, 2),
        Err(Error::Config { .. })
    ));
}

#[test]
fn large_blocks_round_trip_through_device_memory() {
    let size = 1 << 20;
    let Some(store) = open(size, 8) else {
        return;
    };
    let blocks: Vec<Vec<u8>> = (0..8).map(|n| block(n, size)).collect();
    let batch: Vec<(SequenceHash, &[u8])> = blocks
        .iter()
        .enumerate()
        .map(|(n, bytes)| (SequenceHash(n as u64), &bytes[..]))
        .collect();
    store.put_many(&batch).expect("put_many");
    let hashes: Vec<SequenceHash> = (0..8).rev().map(SequenceHash).collect();
    let mut into = vec![0; 8 * size];
    assert_eq!(
        store.get_many(&hashes, &mut into).expect("get_many"),
        [true; 8]
    );
    for (chunk, n) in into.chunks_exact(size).zip((0..8).rev()) {
        assert!(chunk == &blocks[n][..], "block {n}");
    }
}
