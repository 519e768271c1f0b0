//! A KV event stream from the Mooncake trace: round-robin over W workers, an LRU cache of a
//! fixed number of blocks per worker, each request queried at its arrival. Each `hash_id` of the
//! trace is one block.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use dynamo_core::{
    BlockSize, HashedBlock, KvEvent, KvEventData, LocalBlockHash, SequenceHash, StorageTier,
    WorkerId,
};

/// One request's arrival: the query it makes, then the events its worker emits.
pub(crate) struct Step {
    pub(crate) query: Vec<SequenceHash>,
    pub(crate) events: Vec<KvEvent>,
}

pub(crate) fn trace_path() -> PathBuf {
    // The package folder cargo gives the running test (see `package_dir` in
    // engines/upstream/tests/support/replay.rs).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../shared/traces/mooncake-fast25/synthetic_trace.jsonl")
}

/// Each request's hash ids, in trace order.
pub(crate) fn load_trace() -> Vec<Vec<u64>> {
    let path = trace_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the trace at {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON object");
            value["hash_ids"]
                .as_array()
                .expect("hash_ids")
                .iter()
                .map(|id| id.as_u64().expect("an integer id"))
                .collect()
        })
        .collect()
}

/// Spread the trace's small ids over 64 bits, as real sequence hashes are.
fn hash_of(id: u64) -> SequenceHash {
    SequenceHash(xxhash_rust::xxh3::xxh3_64(&id.to_le_bytes()))
}

struct Lru {
    tick_of: HashMap<SequenceHash, u64>,
    by_tick: BTreeMap<u64, SequenceHash>,
}

pub(crate) fn steps(
    trace: &[Vec<u64>],
    workers: u64,
    capacity: usize,
    block_size: BlockSize,
) -> Vec<Step> {
    let mut caches: Vec<Lru> = (0..workers)
        .map(|_| Lru {
            tick_of: HashMap::new(),
            by_tick: BTreeMap::new(),
        })
        .collect();
    let mut next_event_id = vec![0u64; workers as usize];
    let mut tick = 0u64;
    let mut steps = Vec::with_capacity(trace.len());
    for (i, ids) in trace.iter().enumerate() {
        let w = (i as u64 % workers) as usize;
        let query: Vec<SequenceHash> = ids.iter().map(|&id| hash_of(id)).collect();
        let cache = &mut caches[w];
        let mut events = Vec::new();
        let mut emit = |data: KvEventData, events: &mut Vec<KvEvent>| {
            events.push(KvEvent {
                worker: WorkerId::new(w as u64),
                event_id: next_event_id[w],
                tier: StorageTier::Device,
                data,
            });
            next_event_id[w] += 1;
        };
        let mut run: Vec<HashedBlock> = Vec::new();
        let mut run_parent = None;
        for (position, &hash) in query.iter().enumerate() {
            tick += 1;
            if let Some(old) = cache.tick_of.insert(hash, tick) {
                cache.by_tick.remove(&old);
                cache.by_tick.insert(tick, hash);
                if !run.is_empty() {
                    let blocks = std::mem::take(&mut run);
                    emit(
                        KvEventData::Stored {
                            parent: run_parent,
                            block_size,
                            blocks,
                        },
                        &mut events,
                    );
                }
                continue;
            }
            cache.by_tick.insert(tick, hash);
            if run.is_empty() {
                run_parent = position.checked_sub(1).map(|p| query[p]);
            }
            run.push(HashedBlock {
                local: LocalBlockHash(hash.0),
                sequence: hash,
            });
        }
        if !run.is_empty() {
            emit(
                KvEventData::Stored {
                    parent: run_parent,
                    block_size,
                    blocks: run,
                },
                &mut events,
            );
        }
        let mut evicted = Vec::new();
        while cache.tick_of.len() > capacity {
            let Some((_, hash)) = cache.by_tick.pop_first() else {
                break;
            };
            cache.tick_of.remove(&hash);
            evicted.push(hash);
        }
        if !evicted.is_empty() {
            emit(KvEventData::Removed { blocks: evicted }, &mut events);
        }
        steps.push(Step { query, events });
    }
    steps
}
