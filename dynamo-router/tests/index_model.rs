//! The prefix index against a naive reference model, under random interleavings of stores,
//! removes, clears and worker removals across many workers and tiers.

use std::collections::{BTreeMap, HashMap, HashSet};

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, LocalBlockHash, SequenceHash, StorageTier,
    WorkerId,
};
use dynamo_router::{IndexError, KvIndex, OverlapSource, Overlaps, SharedIndex, TierOverlap};
use proptest::prelude::*;

const BLOCK_SIZE: u32 = 16;
const UNIVERSE: u64 = 24;

#[derive(Debug, Clone)]
enum Op {
    Store {
        worker: u64,
        tier: usize,
        parent: Option<u64>,
        blocks: Vec<u64>,
        wrong_size: bool,
    },
    Remove {
        worker: u64,
        tier: usize,
        blocks: Vec<u64>,
    },
    Clear {
        worker: u64,
        tier: usize,
    },
    RemoveWorker {
        worker: u64,
    },
    /// Re-send the worker's last event id (a duplicate), or skip one ahead (a gap).
    Renumber {
        worker: u64,
        skip: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    op_over(6, UNIVERSE)
}

/// An operation on one of `workers` workers, its blocks among `universe` hashes.
fn op_over(workers: u64, universe: u64) -> impl Strategy<Value = Op> {
    let worker = 0u64..workers;
    let tier = 0usize..3;
    let hash = 0..universe;
    prop_oneof![
        6 => (worker.clone(), tier.clone(), prop::option::weighted(0.5, hash.clone()),
              prop::collection::vec(hash.clone(), 1..6), prop::bool::weighted(0.05))
            .prop_map(|(worker, tier, parent, blocks, wrong_size)| Op::Store { worker, tier, parent, blocks, wrong_size }),
        3 => (worker.clone(), tier.clone(), prop::collection::vec(hash, 1..4))
            .prop_map(|(worker, tier, blocks)| Op::Remove { worker, tier, blocks }),
        1 => (worker.clone(), tier).prop_map(|(worker, tier)| Op::Clear { worker, tier }),
        1 => worker.clone().prop_map(|worker| Op::RemoveWorker { worker }),
        1 => (worker, any::<bool>()).prop_map(|(worker, skip)| Op::Renumber { worker, skip }),
    ]
}

/// The reference: per worker, per tier, a plain set of hashes.
#[derive(Default)]
struct Model {
    held: HashMap<u64, BTreeMap<StorageTier, HashSet<u64>>>,
    next_event_id: HashMap<u64, u64>,
}

impl Model {
    fn holds_any(&self, worker: u64, hash: u64) -> Option<StorageTier> {
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
                match self.holds_any(worker, hash) {
                    Some(StorageTier::Device) => overlap.device += 1,
                    Some(StorageTier::Host) => overlap.host += 1,
                    Some(StorageTier::Disk) => overlap.disk += 1,
                    Some(_) => overlap.remote += 1,
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
            .map(|tiers| {
                let all: HashSet<u64> = tiers.values().flatten().copied().collect();
                all.len() as u64
            })
            .sum()
    }

    fn unique(&self) -> usize {
        let all: HashSet<u64> = self
            .held
            .values()
            .flat_map(|tiers| tiers.values().flatten().copied())
            .collect();
        all.len()
    }

    /// Apply an event the way the index is documented to; returns the error name, if any.
    fn apply(
        &mut self,
        worker: u64,
        event_id: u64,
        tier: StorageTier,
        data: &KvEventData,
    ) -> Option<&'static str> {
        if let Some(&next) = self.next_event_id.get(&worker) {
            if event_id == 0 && next > 0 {
                // The worker restarted: it holds nothing any more.
                self.held.remove(&worker);
            } else if event_id < next {
                return Some("stale_event");
            }
        }
        self.next_event_id.insert(worker, event_id + 1);
        let entry = self.held.entry(worker).or_default();
        match data {
            KvEventData::Stored {
                parent,
                block_size,
                blocks,
            } => {
                if block_size.get() != BLOCK_SIZE {
                    return Some("block_size_mismatch");
                }
                if let Some(parent) = parent
                    && !entry.values().any(|set| set.contains(&parent.0))
                {
                    return Some("unknown_parent");
                }
                let set = entry.entry(tier).or_default();
                set.extend(blocks.iter().map(|b| b.sequence.0));
                None
            }
            KvEventData::Removed { blocks } => {
                let set = entry.entry(tier).or_default();
                let unknown = blocks.iter().filter(|b| !set.remove(&b.0)).count();
                (unknown > 0).then_some("unknown_removal")
            }
            KvEventData::Cleared => {
                entry.remove(&tier);
                None
            }
            _ => None,
        }
    }
}

fn block(hash: u64) -> HashedBlock {
    HashedBlock {
        local: LocalBlockHash(hash),
        sequence: SequenceHash(hash),
    }
}

fn hashes(query: &[u64]) -> Vec<SequenceHash> {
    query.iter().copied().map(SequenceHash).collect()
}

fn index_overlaps(index: &KvIndex, query: &[u64]) -> BTreeMap<u64, TierOverlap> {
    let overlaps = index.overlaps(&hashes(query));
    let result: BTreeMap<u64, TierOverlap> = overlaps.iter().map(|(w, o)| (w.worker, o)).collect();
    assert_eq!(result.len(), overlaps.len(), "a worker appears twice");
    result
}

/// The event `op` sends, numbered after the worker's last in `next_id`; or, for a worker's
/// removal, the worker (its numbering forgotten).
fn event_of(
    op: Op,
    block_size: BlockSize,
    next_id: &mut HashMap<u64, u64>,
) -> Result<KvEvent, u64> {
    let (worker, tier, data, id_shift): (u64, usize, KvEventData, i64) = match op {
        Op::Store {
            worker,
            tier,
            parent,
            blocks,
            wrong_size,
        } => {
            let size = if wrong_size {
                BlockSize::new(BLOCK_SIZE * 2).expect("non-zero")
            } else {
                block_size
            };
            let data = KvEventData::Stored {
                parent: parent.map(SequenceHash),
                block_size: size,
                blocks: blocks.into_iter().map(block).collect(),
            };
            (worker, tier, data, 0)
        }
        Op::Remove {
            worker,
            tier,
            blocks,
        } => (
            worker,
            tier,
            KvEventData::Removed {
                blocks: hashes(&blocks),
            },
            0,
        ),
        Op::Clear { worker, tier } => (worker, tier, KvEventData::Cleared, 0),
        Op::RemoveWorker { worker } => {
            next_id.remove(&worker);
            return Err(worker);
        }
        Op::Renumber { worker, skip } => {
            // A cleared event, numbered as a duplicate or past a gap.
            let shift = if skip { 1 } else { -1 };
            (worker, 0, KvEventData::Cleared, shift)
        }
    };
    let tier = StorageTier::ALL[tier];
    let base = next_id.get(&worker).copied().unwrap_or(0) as i64;
    let event_id = (base + id_shift).max(0) as u64;
    if event_id >= base as u64 {
        next_id.insert(worker, event_id + 1);
    }
    Ok(KvEvent {
        worker: WorkerId::new(worker),
        event_id,
        tier,
        data,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_the_reference_model(
        ops in prop::collection::vec(op(), 1..120),
        queries in prop::collection::vec(prop::collection::vec(0..UNIVERSE, 0..8), 1..12),
    ) {
        let block_size = BlockSize::new(BLOCK_SIZE).unwrap();
        let mut index = KvIndex::new(block_size);
        let mut model = Model::default();
        let mut next_id: HashMap<u64, u64> = HashMap::new();

        for op in ops {
            let event = match event_of(op, block_size, &mut next_id) {
                Ok(event) => event,
                Err(worker) => {
                    let held = index.remove_worker(WorkerId::new(worker));
                    let expected = model.held.remove(&worker).map(|tiers| {
                        tiers.values().flatten().collect::<HashSet<_>>().len() as u64
                    }).unwrap_or(0);
                    model.next_event_id.remove(&worker);
                    prop_assert_eq!(held, expected);
                    continue;
                }
            };
            let (worker, event_id, tier) = (event.worker.worker, event.event_id, event.tier);
            let got = index.apply(&event).err().map(|e: IndexError| e.name());
            let want = model.apply(worker, event_id, tier, &event.data);
            prop_assert_eq!(got, want, "event {:?}", event);
            prop_assert_eq!(index.resident_blocks(), model.resident());
            prop_assert_eq!(index.unique_blocks(), model.unique());
            for query in &queries {
                prop_assert_eq!(index_overlaps(&index, query), model.overlaps(query), "query {:?}", query);
            }
        }

        let restored = KvIndex::restore(&index.snapshot()).unwrap();
        prop_assert_eq!(restored.snapshot(), index.snapshot());
        for query in &queries {
            prop_assert_eq!(index_overlaps(&restored, query), model.overlaps(query));
        }

        // The dump as events rebuilds the same answers in an empty index.
        let mut replayed = KvIndex::new(block_size);
        for event in index.snapshot().to_events() {
            prop_assert_eq!(replayed.apply(&event), Ok(()));
        }
        prop_assert_eq!(replayed.resident_blocks(), index.resident_blocks());
        for query in &queries {
            prop_assert_eq!(index_overlaps(&replayed, query), model.overlaps(query));
        }
    }

    /// A query written into an answer that held another query's workers gives the same answer
    /// as a fresh one, the same workers in the same order, and both agree with the reference
    /// model; with 16 workers over 8 hashes, so that answers outgrow their two inline workers
    /// and walks their eight (and take the thread's spare buffers).
    #[test]
    fn an_answer_written_into_a_used_one_is_the_fresh_answer(
        ops in prop::collection::vec(op_over(16, 8), 1..200),
        queries in prop::collection::vec(prop::collection::vec(0..8u64, 0..8), 1..12),
    ) {
        answers_agree(ops, &queries, 0)?;
    }

    /// The same, the 16 workers' slots 58 to 73 (58 other workers hold one unrelated block
    /// each): a walk whose workers all have slots below 64 follows them as a word's bits, one
    /// with a larger slot by merges, and a walk by bits meets segments with larger slots.
    #[test]
    fn answers_agree_when_slots_straddle_64(
        ops in prop::collection::vec(op_over(16, 8), 1..200),
        queries in prop::collection::vec(prop::collection::vec(0..8u64, 0..8), 1..12),
    ) {
        answers_agree(ops, &queries, 58)?;
    }
}

/// The case of `an_answer_written_into_a_used_one_is_the_fresh_answer`, after `fillers` other
/// workers (ids from 10,000) have each stored one block that no query names.
fn answers_agree(ops: Vec<Op>, queries: &[Vec<u64>], fillers: u64) -> Result<(), TestCaseError> {
    let block_size = BlockSize::new(BLOCK_SIZE).expect("non-zero");
    let index = SharedIndex::new(block_size);
    let mut model = Model::default();
    let mut next_id: HashMap<u64, u64> = HashMap::new();
    for filler in 10_000..10_000 + fillers {
        let data = KvEventData::Stored {
            parent: None,
            block_size,
            blocks: vec![block(1_000_000 + filler)],
        };
        let event = KvEvent {
            worker: WorkerId::new(filler),
            event_id: 0,
            tier: StorageTier::Device,
            data,
        };
        prop_assert_eq!(index.apply(&event), Ok(()));
        model.apply(filler, 0, StorageTier::Device, &event.data);
    }
    // One answer for every query of the case, through the index and through the selector's
    // trait, as a router keeps one.
    let (mut answer, mut through_source) = (Overlaps::default(), Overlaps::default());
    let now = std::time::Instant::now();
    for op in ops {
        // Besides the random queries: the chain a store has just extended, with its parent.
        let mut stored = Vec::new();
        match event_of(op, block_size, &mut next_id) {
            Ok(event) => {
                if let KvEventData::Stored { parent, blocks, .. } = &event.data {
                    stored.extend(parent.map(|p| p.0));
                    stored.extend(blocks.iter().map(|b| b.sequence.0));
                }
                let got = index.apply(&event).err().map(|e| e.name());
                let want =
                    model.apply(event.worker.worker, event.event_id, event.tier, &event.data);
                prop_assert_eq!(got, want, "event {:?}", event);
            }
            Err(worker) => {
                index.remove_worker(WorkerId::new(worker));
                model.held.remove(&worker);
                model.next_event_id.remove(&worker);
            }
        }
        for query in queries.iter().chain([&stored]) {
            let fresh = index.overlaps(&hashes(query));
            let by_worker: BTreeMap<u64, TierOverlap> =
                fresh.iter().map(|(w, o)| (w.worker, o)).collect();
            prop_assert_eq!(by_worker, model.overlaps(query), "query {:?}", query);
            index.overlaps_into(&hashes(query), &mut answer);
            prop_assert_eq!(&answer, &fresh, "query {:?}", query);
            OverlapSource::overlaps_into(&index, &hashes(query), now, &mut through_source);
            prop_assert_eq!(&through_source, &fresh, "query {:?}", query);
        }
    }
    Ok(())
}
