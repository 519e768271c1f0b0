//! The storage tiers (host, disk, object store on the local file system) against the shared
//! suite, each tier's own behaviour, and host and disk against a map as a reference model.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use common::{CAPACITY, block, conformance};
use dynamo_core::SequenceHash;
use dynamo_kvbm::object_store::local::LocalFileSystem;
use dynamo_kvbm::{
    BlockStore, DiskConfig, DiskStore, Error, HostStore, ObjectConfig, ObjectStoreBlocks,
};
use proptest::prelude::*;

fn disk(dir: &tempfile::TempDir, block_bytes: usize, capacity: usize) -> DiskStore {
    DiskStore::open(DiskConfig::new(
        dir.path().join("blocks"),
        block_bytes,
        capacity,
    ))
    .expect("a disk store")
}

#[test]
fn host_store_behaves_like_a_block_store() {
    for size in [1, 1000, 8192] {
        conformance(&HostStore::new(size, CAPACITY).expect("a host store"));
    }
}

#[test]
fn host_store_refuses_a_shape_it_cannot_hold() {
    assert!(matches!(HostStore::new(0, 4), Err(Error::Config { .. })));
    assert!(matches!(
        HostStore::new(usize::MAX, 2),
        Err(Error::Config { .. })
    ));
}

#[test]
fn disk_store_behaves_like_a_block_store_direct_or_buffered() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for size in [1, 1000, 8192] {
        for direct in [true, false] {
            let config = DiskConfig::new(dir.path().join("blocks"), size, CAPACITY)
                .direct_io(direct)
                .queue_depth(3);
            let store = DiskStore::open(config).expect("a disk store");
            assert!(direct || !store.direct_io());
            conformance(&store);
        }
    }
}

#[test]
fn disk_store_preallocates_its_file_in_whole_pages() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = disk(&dir, 5000, 3);
    let len = std::fs::metadata(store.path()).expect("the file").len();
    assert_eq!(len, 3 * 8192, "slots are rounded up to 4096 bytes");
    assert!(matches!(
        DiskStore::open(DiskConfig::new(dir.path().join("zero"), 0, 3)),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        DiskStore::open(DiskConfig::new(
            dir.path().join("no/such/dir/blocks"),
            64,
            3
        )),
        Err(Error::Open { .. })
    ));
}

/// A 4096-aligned page, so that a test can hand the disk store memory it writes from and reads
/// into without a bounce copy.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[test]
fn disk_store_round_trips_aligned_and_unaligned_batches_at_depth() {
    const BLOCKS: usize = 16;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let size = 2 * 4096;
    let store =
        DiskStore::open(DiskConfig::new(dir.path().join("blocks"), size, BLOCKS).queue_depth(4))
            .expect("a disk store");
    println!("direct I/O: {}", store.direct_io());

    let mut aligned = vec![Page::zeroed(); BLOCKS * size / 4096];
    let source: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
    for (n, chunk) in source.chunks_exact_mut(size).enumerate() {
        chunk.copy_from_slice(&block(n as u64, size));
    }
    let hashes: Vec<SequenceHash> = (0..BLOCKS as u64).map(SequenceHash).collect();
    let batch: Vec<(SequenceHash, &[u8])> = hashes
        .iter()
        .zip(source.chunks_exact(size))
        .map(|(&hash, chunk)| (hash, chunk))
        .collect();
    store.put_many(&batch).expect("put_many");

    // Read back into aligned memory, then into memory one byte off alignment.
    let mut into = vec![Page::zeroed(); BLOCKS * size / 4096];
    let into: &mut [u8] = bytemuck::cast_slice_mut(&mut into);
    assert_eq!(
        store.get_many(&hashes, into).expect("get_many"),
        [true; BLOCKS]
    );
    let mut unaligned = vec![0u8; BLOCKS * size + 1];
    let unaligned = &mut unaligned[1..];
    assert_eq!(
        store.get_many(&hashes, unaligned).expect("get_many"),
        [true; BLOCKS]
    );
    for (n, (a, b)) in into
        .chunks_exact(size)
        .zip(unaligned.chunks_exact(size))
        .enumerate()
    {
        assert_eq!(a, &block(n as u64, size)[..], "aligned block {n}");
        assert_eq!(b, &block(n as u64, size)[..], "unaligned block {n}");
    }
}

#[test]
fn concurrent_readers_and_writers_see_whole_blocks() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let size = 4096 + 100;
    let stores: [Box<dyn BlockStore>; 2] = [
        Box::new(HostStore::new(size, 8).expect("a host store")),
        Box::new(disk(&dir, size, 8)),
    ];
    for store in &stores {
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let store = &**store;
                scope.spawn(move || {
                    let mut into = vec![0; size];
                    for round in 0..50u64 {
                        let n = thread * 2 + round % 2;
                        store
                            .put(SequenceHash(n), &block(n, size))
                            .expect("room for all");
                        if store.get(SequenceHash(n), &mut into).expect("get") {
                            assert_eq!(into, block(n, size));
                        }
                        store.remove(SequenceHash(n)).expect("remove");
                    }
                });
            }
        });
        assert!(store.is_empty());
    }
}

fn local_objects(dir: &tempfile::TempDir) -> Arc<LocalFileSystem> {
    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("a local object store"))
}

#[test]
fn object_store_blocks_behave_like_a_block_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for size in [1, 1000, 8192] {
        let config = ObjectConfig::new(format!("kv/{size}"), size, CAPACITY).concurrency(3);
        let store = ObjectStoreBlocks::open(local_objects(&dir), config).expect("a store");
        conformance(&store);
    }
}

#[test]
fn object_store_blocks_recover_what_is_under_their_prefix() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = local_objects(&dir);
    let config = || ObjectConfig::new("kv", 64, 3);
    let store = ObjectStoreBlocks::open(backend.clone(), config()).expect("a store");
    for n in 1..=2 {
        store.put(SequenceHash(n), &block(n, 64)).expect("put");
    }
    assert_eq!(store.key(SequenceHash(1)).as_ref(), "kv/0000000000000001");
    drop(store);

    // Objects that are not blocks of this store are left alone.
    for (key, len) in [
        ("kv/not-a-hash", 64),
        ("kv/00000000000000ff", 63),
        ("kv/deeper/0000000000000003", 64),
        ("other/0000000000000004", 64),
    ] {
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("a folder");
        std::fs::write(path, vec![0; len]).expect("an object");
    }

    let reopened = ObjectStoreBlocks::open(backend.clone(), config()).expect("a store");
    assert_eq!(reopened.len(), 2);
    let mut into = vec![0; 64];
    assert!(reopened.get(SequenceHash(2), &mut into).expect("get"));
    assert_eq!(into, block(2, 64));

    let fresh = ObjectStoreBlocks::open(backend.clone(), config().recover(false)).expect("a store");
    assert!(fresh.is_empty());

    // A block deleted behind the store's back reads as missing, and is forgotten.
    std::fs::remove_file(dir.path().join("kv/0000000000000001")).expect("the object's file");
    assert!(!reopened.get(SequenceHash(1), &mut into).expect("get"));
    assert!(!reopened.contains(SequenceHash(1)));
}

#[test]
fn object_store_blocks_can_be_used_and_dropped_inside_a_runtime() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // Blocking here is what the docs warn against; it must still not panic.
        let store = ObjectStoreBlocks::open(local_objects(&dir), ObjectConfig::new("kv", 8, 2))
            .expect("a store");
        store.put(SequenceHash(1), &[1; 8]).expect("put");
        drop(store);
    });
}

/// One step of the reference-model test.
#[derive(Debug, Clone)]
enum Op {
    Put(u64, u64),
    Get(u64),
    Remove(u64),
    PutMany(Vec<(u64, u64)>),
    GetMany(Vec<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    let hash = 0..8u64;
    prop_oneof![
        3 => (hash.clone(), any::<u64>()).prop_map(|(h, seed)| Op::Put(h, seed)),
        3 => hash.clone().prop_map(Op::Get),
        2 => hash.clone().prop_map(Op::Remove),
        1 => prop::collection::vec((hash.clone(), any::<u64>()), 0..6).prop_map(Op::PutMany),
        1 => prop::collection::vec(hash, 0..6).prop_map(Op::GetMany),
    ]
}

/// Apply `ops` to `store` and to a map of at most `CAPACITY` entries; both must agree.
fn agrees_with_a_map(store: &dyn BlockStore, ops: &[Op]) {
    let size = store.block_bytes();
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let model_put = |model: &mut HashMap<u64, Vec<u8>>, h: u64, seed: u64| {
        if model.contains_key(&h) {
            true
        } else if model.len() == CAPACITY {
            false
        } else {
            model.insert(h, block(seed, size));
            true
        }
    };
    for op in ops {
        match op {
            Op::Put(h, seed) => {
                let stored = store.put(SequenceHash(*h), &block(*seed, size));
                assert_eq!(
                    stored.is_ok(),
                    model_put(&mut model, *h, *seed),
                    "{op:?}: {stored:?}"
                );
            }
            Op::Get(h) => {
                let mut into = vec![0; size];
                let found = store.get(SequenceHash(*h), &mut into).expect("get");
                assert_eq!(found.then_some(&into), model.get(h), "{op:?}");
            }
            Op::Remove(h) => {
                let removed = store.remove(SequenceHash(*h)).expect("remove");
                assert_eq!(removed, model.remove(h).is_some(), "{op:?}");
            }
            Op::PutMany(batch) => {
                let blocks: Vec<Vec<u8>> =
                    batch.iter().map(|&(_, seed)| block(seed, size)).collect();
                let pairs: Vec<(SequenceHash, &[u8])> = batch
                    .iter()
                    .zip(&blocks)
                    .map(|(&(h, _), b)| (SequenceHash(h), &b[..]))
                    .collect();
                let stored = store.put_many(&pairs);
                let expected = batch
                    .iter()
                    .all(|&(h, seed)| model_put(&mut model, h, seed));
                assert_eq!(stored.is_ok(), expected, "{op:?}: {stored:?}");
            }
            Op::GetMany(hashes) => {
                let mut into = vec![0; hashes.len() * size];
                let keys: Vec<SequenceHash> = hashes.iter().copied().map(SequenceHash).collect();
                let found = store.get_many(&keys, &mut into).expect("get_many");
                for ((h, found), chunk) in hashes.iter().zip(found).zip(into.chunks_exact(size)) {
                    assert_eq!(
                        found.then_some(chunk),
                        model.get(h).map(|b| &b[..]),
                        "{op:?}"
                    );
                }
            }
        }
        assert_eq!(store.len(), model.len(), "{op:?}");
        for h in 0..8 {
            assert_eq!(
                store.contains(SequenceHash(h)),
                model.contains_key(&h),
                "{op:?}: {h}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn host_store_agrees_with_a_map(ops in prop::collection::vec(op(), 1..40)) {
        agrees_with_a_map(&HostStore::new(100, CAPACITY).expect("a host store"), &ops);
    }

    #[test]
    fn disk_store_agrees_with_a_map(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = DiskStore::open(DiskConfig::new(dir.path().join("blocks"), 100, CAPACITY).queue_depth(2))
            .expect("a disk store");
        agrees_with_a_map(&store, &ops);
    }
}
