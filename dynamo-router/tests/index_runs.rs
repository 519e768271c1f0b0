//! The prefix index against a naive reference model on long chains: the shapes that stress how
//! the index keeps blocks in runs. Chains of up to 48 blocks share prefixes of different
//! lengths; workers store stretches of them (continuing a parent or not), evict stretches from
//! the middle (holes inside a run), clear tiers and leave, so that runs are split, emptied,
//! trimmed and compacted while queries start at the first block or in the middle of a chain.

use std::collections::{BTreeMap, HashMap, HashSet};

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, LocalBlockHash, SequenceHash, StorageTier,
    WorkerId,
};
use dynamo_router::{KvIndex, TierOverlap};
use proptest::prelude::*;

const CHAINS: u64 = 4;
const LENGTH: u64 = 48;
const WORKERS: u64 = 5;

/// Block `i` of chain `c`: chains share chain 0's first `8 * c` blocks.
fn hash(chain: u64, i: u64) -> u64 {
    if i < 8 * chain {
        1_000 + i
    } else {
        1_000 * (chain + 1) + i
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store {
        worker: u64,
        tier: usize,
        chain: u64,
        from: u64,
        len: u64,
        with_parent: bool,
    },
    Remove {
        worker: u64,
        tier: usize,
        chain: u64,
        from: u64,
        len: u64,
    },
    Clear {
        worker: u64,
        tier: usize,
    },
    RemoveWorker {
        worker: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS;
    let tier = 0usize..2;
    let chain = 0..CHAINS;
    let from = 0..LENGTH;
    prop_oneof![
        8 => (worker.clone(), tier.clone(), chain.clone(), from.clone(), 1..LENGTH, any::<bool>())
            .prop_map(|(worker, tier, chain, from, len, with_parent)| Op::Store { worker, tier, chain, from, len, with_parent }),
        5 => (worker.clone(), tier.clone(), chain, from, 1..12u64)
            .prop_map(|(worker, tier, chain, from, len)| Op::Remove { worker, tier, chain, from, len }),
        1 => (worker.clone(), tier).prop_map(|(worker, tier)| Op::Clear { worker, tier }),
        1 => worker.prop_map(|worker| Op::RemoveWorker { worker }),
    ]
}

/// Per worker, per tier, the hashes it holds.
#[derive(Default)]
struct Model {
    held: HashMap<u64, BTreeMap<StorageTier, HashSet<u64>>>,
}

impl Model {
    fn tier(&self, worker: u64, hash: u64) -> Option<StorageTier> {
        let tiers = self.held.get(&worker)?;
        StorageTier::ALL
            .into_iter()
            .find(|t| tiers.get(t).is_some_and(|set| set.contains(&hash)))
    }

    fn overlaps(&self, query: &[u64]) -> BTreeMap<u64, TierOverlap> {
        let mut result = BTreeMap::new();
        for &worker in self.held.keys() {
            let mut overlap = TierOverlap::default();
            for &hash in query {
                match self.tier(worker, hash) {
                    Some(StorageTier::Device) => overlap.device += 1,
                    Some(StorageTier::Host) => overlap.host += 1,
                    Some(_) => overlap.disk += 1,
                    None => break,
                }
            }
            if overlap.total() > 0 {
                result.insert(worker, overlap);
            }
        }
        result
    }

    fn resident(&self) -> u64 {
        self.held
            .values()
            .map(|tiers| tiers.values().flatten().collect::<HashSet<_>>().len() as u64)
            .sum()
    }
}

fn overlaps(index: &KvIndex, query: &[u64]) -> BTreeMap<u64, TierOverlap> {
    let hashes: Vec<SequenceHash> = query.iter().copied().map(SequenceHash).collect();
    index
        .overlaps(&hashes)
        .iter()
        .map(|(w, o)| (w.worker, o))
        .collect()
}

/// Every chain from its first block, and from a few blocks in.
fn queries() -> Vec<Vec<u64>> {
    let mut queries = Vec::new();
    for chain in 0..CHAINS {
        for start in [0, 5, 17] {
            queries.push((start..LENGTH).map(|i| hash(chain, i)).collect());
        }
    }
    queries
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn runs_agree_with_the_reference_model(ops in prop::collection::vec(op(), 1..80)) {
        let block_size = BlockSize::new(16).unwrap();
        let mut index = KvIndex::new(block_size);
        let mut model = Model::default();
        let mut next_id: HashMap<u64, u64> = HashMap::new();
        let queries = queries();
        for op in ops {
            let (worker, tier, data) = match op {
                Op::Store { worker, tier, chain, from, len, with_parent } => {
                    let end = (from + len).min(LENGTH);
                    let parent = (with_parent && from > 0).then(|| SequenceHash(hash(chain, from - 1)));
                    let blocks = (from..end)
                        .map(|i| HashedBlock { local: LocalBlockHash(i), sequence: SequenceHash(hash(chain, i)) })
                        .collect();
                    (worker, tier, KvEventData::Stored { parent, block_size, blocks })
                }
                Op::Remove { worker, tier, chain, from, len } => {
                    let blocks = (from..(from + len).min(LENGTH)).map(|i| SequenceHash(hash(chain, i))).collect();
                    (worker, tier, KvEventData::Removed { blocks })
                }
                Op::Clear { worker, tier } => (worker, tier, KvEventData::Cleared),
                Op::RemoveWorker { worker } => {
                    index.remove_worker(WorkerId::new(worker));
                    model.held.remove(&worker);
                    next_id.remove(&worker);
                    continue;
                }
            };
            let tier = StorageTier::ALL[tier];
            let id = next_id.entry(worker).or_insert(0);
            let event = KvEvent { worker: WorkerId::new(worker), event_id: *id, tier, data };
            *id += 1;
            let applied = index.apply(&event);
            let held = model.held.entry(worker).or_default();
            match &event.data {
                KvEventData::Stored { parent, blocks, .. } => {
                    let known = parent.is_none_or(|p| held.values().any(|set| set.contains(&p.0)));
                    prop_assert_eq!(applied.is_ok(), known);
                    if known {
                        held.entry(tier).or_default().extend(blocks.iter().map(|b| b.sequence.0));
                    }
                }
                KvEventData::Removed { blocks } => {
                    let set = held.entry(tier).or_default();
                    let unknown = blocks.iter().filter(|b| !set.remove(&b.0)).count();
                    prop_assert_eq!(applied.is_ok(), unknown == 0);
                }
                _ => {
                    held.remove(&tier);
                }
            }
            prop_assert_eq!(index.resident_blocks(), model.resident());
            for query in &queries {
                prop_assert_eq!(overlaps(&index, query), model.overlaps(query), "query {:?}", query);
            }
        }
        let restored = KvIndex::restore(&index.snapshot()).unwrap();
        prop_assert_eq!(restored.snapshot(), index.snapshot());
        let mut replayed = KvIndex::new(block_size);
        for event in index.snapshot().to_events() {
            prop_assert_eq!(replayed.apply(&event), Ok(()));
        }
        for query in &queries {
            prop_assert_eq!(overlaps(&restored, query), model.overlaps(query));
            prop_assert_eq!(overlaps(&replayed, query), model.overlaps(query));
        }
    }
}
