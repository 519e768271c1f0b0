//! The behaviour every `BlockStore` shares, as one suite each store's tests run.

use dynamo_core::SequenceHash;
use dynamo_kvbm::{BlockStore, Error};

/// The capacity the suite expects of the store it is given.
pub(crate) const CAPACITY: usize = 4;

/// A block of `len` bytes that differs for every `seed`.
pub(crate) fn block(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

fn hash(n: u64) -> SequenceHash {
    SequenceHash(0x9e37_79b9_7f4a_7c15 ^ n)
}

fn read(store: &dyn BlockStore, n: u64) -> Option<Vec<u8>> {
    let mut into = vec![0; store.block_bytes()];
    let found = store.get(hash(n), &mut into).expect("get");
    found.then_some(into)
}

/// Run the whole suite on an empty store of [`CAPACITY`] blocks.
pub(crate) fn conformance(store: &dyn BlockStore) {
    assert_eq!(
        store.capacity(),
        CAPACITY,
        "the suite needs a store of {CAPACITY} blocks"
    );
    assert!(store.is_empty());
    starts_empty(store);
    wrong_sizes_are_refused(store);
    round_trip_and_no_op_put(store);
    full_then_remove_frees_room(store);
    batches(store);
    assert!(store.is_empty(), "each part cleans up after itself");
}

fn starts_empty(store: &dyn BlockStore) {
    assert_eq!(store.len(), 0);
    assert!(!store.contains(hash(0)));
    assert_eq!(read(store, 0), None);
    assert!(!store.remove(hash(0)).expect("remove"));
}

fn wrong_sizes_are_refused(store: &dyn BlockStore) {
    let size = store.block_bytes();
    for wrong in [size - 1, size + 1, 0] {
        let put = store.put(hash(1), &vec![0; wrong]);
        assert!(
            matches!(put, Err(Error::BlockSize { expected, got, .. }) if expected == size && got == wrong),
            "put of {wrong} bytes: {put:?}"
        );
        let get = store.get(hash(1), &mut vec![0; wrong]);
        assert!(
            matches!(get, Err(Error::BlockSize { .. })),
            "get into {wrong} bytes: {get:?}"
        );
    }
    let many = store.get_many(&[hash(1), hash(2)], &mut vec![0; size]);
    assert!(matches!(many, Err(Error::BlockSize { .. })), "{many:?}");
    assert!(store.is_empty(), "nothing refused is stored");
}

fn round_trip_and_no_op_put(store: &dyn BlockStore) {
    let size = store.block_bytes();
    store.put(hash(1), &block(1, size)).expect("put");
    assert!(store.contains(hash(1)));
    assert_eq!(store.len(), 1);
    assert_eq!(read(store, 1), Some(block(1, size)));

    // A second put of the same hash keeps the first bytes and takes no room.
    store
        .put(hash(1), &block(99, size))
        .expect("a put of a held hash succeeds");
    assert_eq!(read(store, 1), Some(block(1, size)));
    assert_eq!(store.len(), 1);

    assert!(store.remove(hash(1)).expect("remove"));
    assert!(!store.contains(hash(1)));
    assert_eq!(read(store, 1), None);
}

fn full_then_remove_frees_room(store: &dyn BlockStore) {
    let size = store.block_bytes();
    for n in 0..CAPACITY as u64 {
        store.put(hash(n), &block(n, size)).expect("room");
    }
    assert_eq!(store.len(), CAPACITY);
    let full = store.put(hash(100), &block(100, size));
    assert!(
        matches!(
            full,
            Err(Error::Full {
                capacity: CAPACITY,
                ..
            })
        ),
        "{full:?}"
    );
    assert!(!store.contains(hash(100)));
    // A held hash still succeeds when full.
    store
        .put(hash(0), &block(0, size))
        .expect("no-op put when full");

    assert!(store.remove(hash(2)).expect("remove"));
    store.put(hash(100), &block(100, size)).expect("room again");
    for n in [0, 1, 3, 100] {
        assert_eq!(read(store, n), Some(block(n, size)), "block {n}");
        assert!(store.remove(hash(n)).expect("remove"));
    }
}

fn batches(store: &dyn BlockStore) {
    let size = store.block_bytes();
    let blocks: Vec<Vec<u8>> = (0..6).map(|n| block(n, size)).collect();
    // A duplicate in the batch is stored once.
    store
        .put_many(&[
            (hash(0), &blocks[0]),
            (hash(1), &blocks[1]),
            (hash(0), &blocks[0]),
        ])
        .expect("put_many");
    assert_eq!(store.len(), 2);

    let mut into = vec![0; 3 * size];
    let found = store
        .get_many(&[hash(1), hash(5), hash(0)], &mut into)
        .expect("get_many");
    assert_eq!(found, [true, false, true]);
    assert_eq!(&into[..size], &blocks[1][..]);
    assert_eq!(&into[2 * size..], &blocks[0][..]);

    // Past the capacity: the blocks before the refused one are stored.
    let over: Vec<(SequenceHash, &[u8])> =
        (2..6).map(|n| (hash(n), &blocks[n as usize][..])).collect();
    let full = store.put_many(&over);
    assert!(matches!(full, Err(Error::Full { .. })), "{full:?}");
    assert_eq!(store.len(), CAPACITY);
    assert!(store.contains(hash(2)) && store.contains(hash(3)));
    assert!(!store.contains(hash(4)) && !store.contains(hash(5)));

    let all: Vec<SequenceHash> = (0..4).map(hash).collect();
    let mut into = vec![0; 4 * size];
    assert_eq!(
        store.get_many(&all, &mut into).expect("get_many"),
        [true; 4]
    );
    for (n, chunk) in into.chunks_exact(size).enumerate() {
        assert_eq!(chunk, &blocks[n][..], "block {n}");
    }
    assert!(
        store
            .get_many(&[], &mut [])
            .expect("an empty batch")
            .is_empty()
    );
    store.put_many(&[]).expect("an empty batch");
    for hash in all {
        assert!(store.remove(hash).expect("remove"));
    }
}
