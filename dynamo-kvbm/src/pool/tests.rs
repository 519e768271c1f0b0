use std::collections::HashSet;

use dynamo_core::{BlockHasher, LocalBlockHash};
use proptest::prelude::*;

use super::*;

fn block(id: u64) -> HashedBlock {
    HashedBlock {
        local: LocalBlockHash(id),
        sequence: SequenceHash(id),
    }
}

fn block_size(tokens: u32) -> BlockSize {
    BlockSize::new(tokens).expect("a valid block size")
}

#[test]
fn released_blocks_stay_cached_until_evicted_least_recent_first() {
    let mut pool = BlockPool::new(3, block_size(4));
    let mut private = Vec::new();
    assert!(pool.take(3, &mut private));
    let mut private = private.into_iter();
    let mut held: Vec<PinnedBlock> = [(None, 1), (Some(1), 2), (Some(2), 3)]
        .into_iter()
        .filter_map(|(parent, id)| {
            let next = private.next()?;
            Some(pool.register(next, parent.map(SequenceHash), block(id)))
        })
        .collect();
    let ids: Vec<BlockId> = held.iter().map(Held::id).collect();
    assert_eq!(pool.take_events().len(), 1, "one chain, one Stored event");
    // Released tail first: block 3 is evicted first.
    pool.release(&mut held);
    assert_eq!((pool.in_use(), pool.counters().cached), (0, 3));
    let mut found = Vec::new();
    pool.cached_prefix(&[block(1), block(2), block(9)], &mut found);
    assert_eq!(found, ids[..2]);
    let mut taken = Vec::new();
    assert!(pool.take(1, &mut taken));
    assert_eq!(
        pool.take_events(),
        [KvEventData::Removed {
            blocks: vec![SequenceHash(3)]
        }]
    );
    let first = pool.pin(ids[0]).expect("block 1 is registered");
    assert!(pool.take(1, &mut taken), "block 2 is evictable");
    assert!(
        !pool.take(1, &mut taken),
        "block 1 is pinned, the rest private"
    );
    assert_eq!(pool.in_use(), 3);
    assert!(pool.pin(ids[1]).is_none(), "block 2 was evicted");
    pool.release(&mut vec![first]);
    pool.release(&mut taken);
    assert_eq!(pool.counters().free, 2);
}

#[test]
fn a_duplicate_registration_frees_the_private_block_and_pins_the_first() {
    let mut pool = BlockPool::new(2, block_size(4));
    let mut private = Vec::new();
    assert!(pool.take(2, &mut private));
    let second = private.pop().expect("two taken");
    let first = private.pop().expect("two taken");
    let kept = pool.register(first, None, block(7));
    let again = pool.register(second, None, block(7));
    assert_eq!(kept.id(), again.id());
    assert_eq!(pool.counters().free, 1);
    assert_eq!(pool.take_events().len(), 1, "stored once");
    pool.release(&mut vec![kept, again]);
    assert_eq!(pool.counters().cached, 1);
}

#[test]
fn tracked_evictions_carry_hashes_and_parents() {
    let mut pool = BlockPool::new(2, block_size(4));
    pool.track_evictions(true);
    let mut private = Vec::new();
    assert!(pool.take(2, &mut private));
    let mut private = private.into_iter();
    let mut held = Vec::new();
    if let (Some(a), Some(b)) = (private.next(), private.next()) {
        held.push(pool.register(a, None, block(1)));
        held.push(pool.register(b, Some(SequenceHash(1)), block(2)));
    }
    pool.release(&mut held);
    let mut taken = Vec::new();
    assert!(pool.take(2, &mut taken));
    let evicted = pool.take_evicted();
    let order: Vec<_> = evicted.iter().map(|e| (e.block, e.parent)).collect();
    assert_eq!(
        order,
        [(block(2), Some(SequenceHash(1))), (block(1), None)],
        "the tail goes first, with its parent"
    );
    assert_eq!(evicted[0].id, taken[0].id());
}

/// What a test sequence does next.
#[derive(Debug, Clone)]
enum Op {
    /// Start a sequence of full blocks drawn from a small alphabet of contents, reusing what is
    /// cached and registering the rest.
    Start(Vec<u32>),
    /// Finish the `n`-th live sequence.
    Finish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(0u32..3, 1..5).prop_map(Op::Start),
        (0usize..8).prop_map(Op::Finish),
    ]
}

proptest! {
    /// Replaying the pool's events onto a set gives exactly the registered blocks, every block
    /// is in use, cached or free, never two at once, and a block is never evicted while a child
    /// of it is registered: least recently released is leaves first, because a sequence pins a
    /// block's whole prefix with it and releases its tail first.
    #[test]
    fn events_describe_the_registered_blocks(ops in proptest::collection::vec(op(), 1..60)) {
        let block_size = block_size(2);
        let hasher = BlockHasher::new(block_size);
        let mut pool = BlockPool::new(10, block_size);
        let mut live: Vec<Vec<PinnedBlock>> = Vec::new();
        let mut announced: HashSet<SequenceHash> = HashSet::new();
        let mut parent_of: std::collections::HashMap<SequenceHash, SequenceHash> =
            std::collections::HashMap::new();
        for op in ops {
            match op {
                Op::Start(contents) => {
                    let tokens: Vec<u32> = contents.iter().flat_map(|&c| [c, c + 10]).collect();
                    let hashed = hasher.hash_blocks(&tokens);
                    let mut found = Vec::new();
                    pool.cached_prefix(&hashed, &mut found);
                    let mut blocks: Vec<PinnedBlock> =
                        found.iter().filter_map(|&id| pool.pin(id)).collect();
                    let cached = blocks.len();
                    let mut private = Vec::new();
                    if !pool.take(hashed.len() - cached, &mut private) {
                        pool.release(&mut blocks);
                        continue;
                    }
                    for (i, block) in private.into_iter().enumerate() {
                        let at = cached + i;
                        let parent = at.checked_sub(1).map(|p| hashed[p].sequence);
                        blocks.push(pool.register(block, parent, hashed[at]));
                    }
                    live.push(blocks);
                }
                Op::Finish(n) => {
                    if !live.is_empty() {
                        let mut blocks = live.remove(n % live.len());
                        pool.release(&mut blocks);
                    }
                }
            }
            for event in pool.take_events() {
                match event {
                    KvEventData::Stored { parent, blocks, .. } => {
                        let mut parent = parent;
                        for block in blocks {
                            prop_assert!(announced.insert(block.sequence), "stored twice");
                            if let Some(parent) = parent {
                                parent_of.insert(block.sequence, parent);
                            }
                            parent = Some(block.sequence);
                        }
                    }
                    KvEventData::Removed { blocks } => {
                        for hash in blocks {
                            prop_assert!(announced.remove(&hash), "removed unknown");
                            let orphans = announced
                                .iter()
                                .filter(|child| parent_of.get(child) == Some(&hash))
                                .count();
                            prop_assert_eq!(orphans, 0, "a parent evicted before its child");
                        }
                    }
                    KvEventData::Cleared => announced.clear(),
                    _ => {}
                }
            }
            let registered: HashSet<SequenceHash> = pool.registered_hashes().collect();
            prop_assert_eq!(&registered, &announced);
            let counters = pool.counters();
            prop_assert_eq!(counters.in_use + counters.cached + counters.free, counters.capacity);
        }
    }
}
