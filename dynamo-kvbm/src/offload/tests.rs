use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use dynamo_core::{BlockHasher, BlockSize};
use proptest::prelude::*;

use super::*;

/// A store in a map: the simplest thing that keeps bytes, with a failure switch.
#[derive(Debug)]
struct MapStore {
    tier: StorageTier,
    block_bytes: usize,
    capacity: usize,
    blocks: Mutex<HashMap<SequenceHash, Vec<u8>>>,
}

impl MapStore {
    fn new(tier: StorageTier, block_bytes: usize, capacity: usize) -> Arc<Self> {
        Arc::new(MapStore {
            tier,
            block_bytes,
            capacity,
            blocks: Mutex::new(HashMap::new()),
        })
    }

    fn hashes(&self) -> BTreeSet<SequenceHash> {
        self.blocks.lock().unwrap().keys().copied().collect()
    }
}

impl BlockStore for MapStore {
    fn tier(&self) -> StorageTier {
        self.tier
    }
    fn block_bytes(&self) -> usize {
        self.block_bytes
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.blocks.lock().unwrap().len()
    }
    fn contains(&self, hash: SequenceHash) -> bool {
        self.blocks.lock().unwrap().contains_key(&hash)
    }
    fn put(&self, hash: SequenceHash, block: &[u8]) -> Result<(), Error> {
        let mut blocks = self.blocks.lock().unwrap();
        if !blocks.contains_key(&hash) && blocks.len() >= self.capacity {
            return Err(Error::Full {
                tier: self.tier,
                capacity: self.capacity,
            });
        }
        blocks.entry(hash).or_insert_with(|| block.to_vec());
        Ok(())
    }
    fn get(&self, hash: SequenceHash, into: &mut [u8]) -> Result<bool, Error> {
        let blocks = self.blocks.lock().unwrap();
        let Some(block) = blocks.get(&hash) else {
            return Ok(false);
        };
        into.copy_from_slice(block);
        Ok(true)
    }
    fn remove(&self, hash: SequenceHash) -> Result<bool, Error> {
        Ok(self.blocks.lock().unwrap().remove(&hash).is_some())
    }
}

const BLOCK_BYTES: usize = 8;

fn block_size() -> BlockSize {
    BlockSize::new(2).unwrap()
}

/// A chain of `n` blocks.
fn chain(n: u32) -> Vec<HashedBlock> {
    let tokens: Vec<u32> = (0..2 * n).collect();
    BlockHasher::new(block_size()).hash_blocks(&tokens)
}

/// A block's bytes: a function of its hash, as real KV is.
fn bytes_of(hash: SequenceHash) -> Vec<u8> {
    hash.0.to_le_bytes().to_vec()
}

/// Host and disk tiers in maps, the worker on a thread of its own.
fn tiers(
    host: usize,
    disk: usize,
    config: OffloadConfig,
) -> (LowerTiers, Arc<MapStore>, Arc<MapStore>) {
    let host_store = MapStore::new(StorageTier::Host, BLOCK_BYTES, host);
    let disk_store = MapStore::new(StorageTier::Disk, BLOCK_BYTES, disk);
    let (tiers, worker) = LowerTiers::new(
        vec![
            LowerTier::new(host_store.clone(), block_size()),
            LowerTier::new(disk_store.clone(), block_size()),
        ],
        config,
    )
    .unwrap();
    std::thread::spawn(move || worker.run());
    (tiers, host_store, disk_store)
}

fn offload_all(tiers: &LowerTiers, blocks: &[HashedBlock]) {
    let mut parent = None;
    for block in blocks {
        tiers
            .offload(*block, parent, &bytes_of(block.sequence))
            .unwrap();
        parent = Some(block.sequence);
    }
}

#[test]
fn evicted_blocks_come_back_from_host_then_disk_in_order() {
    let (tiers, _, _) = tiers(2, 8, OffloadConfig::default());
    let blocks = chain(5);
    offload_all(&tiers, &blocks);
    assert!(tiers.wait_idle(Duration::from_secs(10)));
    // The host keeps the last two; the first three went down to the disk.
    let mut into = Vec::new();
    assert_eq!(tiers.onboard(&blocks, &mut into), 5);
    let expected: Vec<u8> = blocks.iter().flat_map(|b| bytes_of(b.sequence)).collect();
    assert_eq!(into, expected);
    let counters = tiers.counters();
    let (host, disk) = (counters.tiers[0], counters.tiers[1]);
    assert_eq!((host.held, disk.held), (2, 3));
    assert_eq!((host.offloaded_blocks, disk.offloaded_blocks), (5, 3));
    // The lookup starts with the host: it holds blocks 3 and 4, not block 0, so the prefix
    // comes from the disk up to where the host continues it.
    assert_eq!((host.onboarded_blocks, disk.onboarded_blocks), (2, 3));
    assert_eq!(disk.onboarded_bytes, 3 * BLOCK_BYTES as u64);
    assert_eq!(counters.queue_depth, 0);
}

#[test]
fn a_gap_ends_the_onboarded_prefix() {
    let (tiers, _, _) = tiers(4, 0, OffloadConfig::default());
    let blocks = chain(3);
    offload_all(&tiers, &[blocks[0], blocks[2]]);
    let mut into = Vec::new();
    assert_eq!(tiers.onboard(&blocks, &mut into), 1);
    assert_eq!(into, bytes_of(blocks[0].sequence));
    assert_eq!(tiers.onboard(&blocks[1..], &mut into), 0);
    assert!(into.is_empty());
}

#[test]
fn a_full_queue_drops_the_offload_and_counts_it() {
    // No worker runs: the queue of one fills and stays full.
    let host = MapStore::new(StorageTier::Host, BLOCK_BYTES, 1);
    let disk = MapStore::new(StorageTier::Disk, BLOCK_BYTES, 8);
    let (tiers, _worker) = LowerTiers::new(
        vec![
            LowerTier::new(host, block_size()),
            LowerTier::new(disk, block_size()),
        ],
        OffloadConfig {
            queue_blocks: 1,
            batch_blocks: 4,
        },
    )
    .unwrap();
    offload_all(&tiers, &chain(4));
    let counters = tiers.counters();
    assert_eq!(counters.queue_depth, 1);
    assert_eq!(counters.dropped_queue_full, 2);
    assert!(
        !tiers.wait_idle(Duration::from_millis(10)),
        "nobody drains it"
    );
}

#[test]
fn a_wrong_size_or_shape_is_refused() {
    let (tiers, _, _) = tiers(2, 2, OffloadConfig::default());
    let block = chain(1)[0];
    assert!(matches!(
        tiers.offload(block, None, &[0; 3]),
        Err(Error::BlockSize { got: 3, .. })
    ));
    let host = MapStore::new(StorageTier::Host, BLOCK_BYTES, 2);
    let odd = MapStore::new(StorageTier::Disk, BLOCK_BYTES + 1, 2);
    let mismatched = LowerTiers::new(
        vec![
            LowerTier::new(host.clone(), block_size()),
            LowerTier::new(odd, block_size()),
        ],
        OffloadConfig::default(),
    );
    assert!(matches!(mismatched, Err(Error::Config { .. })));
    let too_big = LowerTier {
        index: TierIndex::new(StorageTier::Host, 3, block_size()),
        store: host,
    };
    let refused = LowerTiers::new(vec![too_big], OffloadConfig::default());
    assert!(matches!(refused, Err(Error::Config { .. })));
    assert!(LowerTiers::new(Vec::new(), OffloadConfig::default()).is_err());
}

/// Apply `events` to per-tier sets, checking that each `Removed` names a block its tier's
/// events stored before.
fn replay(
    model: &mut HashMap<StorageTier, BTreeSet<SequenceHash>>,
    events: Vec<(StorageTier, KvEventData)>,
) -> Result<(), TestCaseError> {
    for (tier, event) in events {
        let held = model.entry(tier).or_default();
        match event {
            KvEventData::Stored { blocks, .. } => {
                for block in blocks {
                    prop_assert!(held.insert(block.sequence), "stored twice in {:?}", tier);
                }
            }
            KvEventData::Removed { blocks } => {
                for hash in blocks {
                    prop_assert!(held.remove(&hash), "removed before stored in {:?}", tier);
                }
            }
            other => prop_assert!(false, "unexpected event {:?}", other),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    /// Offload a block of the universe (with its chain parent).
    Offload(usize),
    /// Onboard from a block of the universe on.
    Onboard(usize),
    /// Let the worker catch up.
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..UNIVERSE).prop_map(Op::Offload),
        3 => (0..UNIVERSE).prop_map(Op::Onboard),
        1 => Just(Op::Settle),
    ]
}

const UNIVERSE: usize = 12;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With the worker running alongside, the tiers' events, replayed into one set per tier,
    /// say what each tier holds (its index and its store alike), every `Removed` follows its
    /// `Stored`, and every onboarded byte is the block's own.
    #[test]
    fn events_replayed_match_what_the_tiers_hold(
        ops in proptest::collection::vec(op(), 1..120),
        host in 1usize..4,
        disk in 0usize..6,
        queue_blocks in 1usize..4,
        batch_blocks in 1usize..4,
    ) {
        let (tiers, host_store, disk_store) =
            tiers(host, disk, OffloadConfig { queue_blocks, batch_blocks });
        let universe = chain(UNIVERSE as u32);
        let mut model = HashMap::new();
        let mut into = Vec::new();
        for op in ops {
            match op {
                Op::Offload(at) => {
                    let parent = at.checked_sub(1).map(|p| universe[p].sequence);
                    let bytes = bytes_of(universe[at].sequence);
                    tiers.offload(universe[at], parent, &bytes).unwrap();
                }
                Op::Onboard(from) => {
                    let found = tiers.onboard(&universe[from..], &mut into);
                    let expected: Vec<u8> = universe[from..from + found]
                        .iter()
                        .flat_map(|block| bytes_of(block.sequence))
                        .collect();
                    prop_assert_eq!(&into, &expected);
                }
                Op::Settle => prop_assert!(tiers.wait_idle(Duration::from_secs(10))),
            }
            replay(&mut model, tiers.take_events())?;
        }
        prop_assert!(tiers.wait_idle(Duration::from_secs(10)));
        replay(&mut model, tiers.take_events())?;
        let state = tiers.shared.lock();
        for (position, store) in [host_store, disk_store].iter().enumerate() {
            let tier = store.tier();
            let replayed = model.remove(&tier).unwrap_or_default();
            let indexed: BTreeSet<SequenceHash> = universe
                .iter()
                .map(|block| block.sequence)
                .filter(|&hash| state.indexes[position].contains(hash))
                .collect();
            prop_assert_eq!(&replayed, &indexed, "{:?} events against its index", tier);
            prop_assert_eq!(&replayed, &store.hashes(), "{:?} events against its store", tier);
        }
        prop_assert_eq!(state.counters.queue_depth, 0);
    }
}
