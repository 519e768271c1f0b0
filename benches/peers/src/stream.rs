//! The event stream every indexer replays, and the exact answers it must give.
//!
//! The stream is the one `dynamo-router`'s own index bench replays (its generator is included
//! from `dynamo-router/benches/support/trace_events.rs`): requests of the Mooncake trace go
//! round-robin to W workers, each worker keeps an LRU cache of 4096 blocks, each trace `hash_id`
//! is one block, and each request is looked up at its arrival, before its worker's events. The
//! LRU evicts a prefix's early blocks before its later ones, so workers hold chains with holes.
//!
//! The generator gives a block the same value as local and as sequence hash (`XXH3(hash_id)`).
//! [`Stream::new`] then rehashes every block the way an engine does: the local (content) hash
//! stays `XXH3(hash_id)` and the sequence hash chains the local hashes of the request's blocks
//! with [`SequenceHash::chain`] (Dynamo's chain hash). Trace ids name whole prefixes, so each id
//! gets one chained hash. With local and sequence hashes distinct and consistent, every indexer
//! sees the hashes it expects: `PositionalIndexer` recomputes the chain from a query's local
//! hashes and checks it against the stored block hashes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use dynamo_core::{BlockSize, KvEvent, KvEventData, LocalBlockHash, SequenceHash};

#[path = "../../../dynamo-router/benches/support/trace_events.rs"]
#[expect(
    dead_code,
    reason = "its loader reads a path fixed to dynamo-router; this bench has its own"
)]
mod trace_events;

pub(crate) use trace_events::Step;

/// Blocks each worker's LRU cache holds.
pub const CAPACITY: usize = 4096;

/// The trace's block size in tokens (only checked for consistency by the indexers).
pub const BLOCK_TOKENS: u32 = 512;

/// Each request's hash ids, in trace order.
pub fn load_trace(path: &Path) -> Result<Vec<Vec<u64>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the trace at {}: {e}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("bad trace line: {e}"))?;
            value["hash_ids"]
                .as_array()
                .ok_or("a trace line without hash_ids")?
                .iter()
                .map(|id| {
                    id.as_u64()
                        .ok_or_else(|| "a non-integer hash id".to_string())
                })
                .collect()
        })
        .collect()
}

/// `scale` copies of `trace` as one longer trace. Copy `k` (0-based) has every hash id shifted by
/// `k * (max_id + 1)`, so that the copies share no block and no prefix, and the copies are
/// interleaved request by request (request 0 of copies 0, 1, ..., then request 1 of each, ...),
/// so the longer trace stays a mix of all copies rather than `scale` phases. Scale 1 is `trace`.
pub fn scaled(trace: Vec<Vec<u64>>, scale: u64) -> Vec<Vec<u64>> {
    if scale <= 1 {
        return trace;
    }
    let stride = trace.iter().flatten().max().map_or(0, |&max| max + 1);
    assert!(
        stride.checked_mul(scale).is_some(),
        "the scaled hash ids must fit in 64 bits"
    );
    let mut out = Vec::with_capacity(trace.len() * scale as usize);
    for ids in &trace {
        for copy in 0..scale {
            let shift = copy * stride;
            out.push(ids.iter().map(|&id| id + shift).collect());
        }
    }
    out
}

/// One worker count's replay: the steps, their exact answers and a few totals.
pub struct Stream {
    /// Worker ids run from 0 to `workers - 1`.
    pub workers: u64,
    pub steps: Vec<Step>,
    /// For each step, the local (content) hashes of its query's blocks.
    pub locals: Vec<Vec<LocalBlockHash>>,
    /// For each step, every worker with a non-empty cached prefix of the query and its depth in
    /// blocks, sorted by worker: the answer an exact index gives at the request's arrival.
    pub expected: Vec<Vec<(u64, u32)>>,
    pub events: usize,
    /// Blocks named by all events (stored plus removed).
    pub blocks: usize,
    /// (worker, block) pairs held once the whole stream is applied.
    pub resident_pairs: usize,
    /// Distinct blocks held by at least one worker once the whole stream is applied.
    pub resident_blocks: usize,
}

impl Stream {
    pub fn new(trace: &[Vec<u64>], workers: u64) -> Stream {
        let block_size = BlockSize::new(BLOCK_TOKENS).expect("a non-zero block size");
        let mut steps = trace_events::steps(trace, workers, CAPACITY, block_size);
        let locals = rehash(&mut steps);
        let mut reference = Reference::new(workers);
        let mut expected = Vec::with_capacity(steps.len());
        let (mut events, mut blocks) = (0, 0);
        for step in &steps {
            expected.push(reference.depths(&step.query));
            for event in &step.events {
                reference.apply(event);
                events += 1;
                blocks += event.block_count();
            }
        }
        Stream {
            workers,
            steps,
            locals,
            expected,
            events,
            blocks,
            resident_pairs: reference.resident_pairs(),
            resident_blocks: reference.resident_blocks(),
        }
    }

    /// Every event of the stream, in order.
    pub fn events(&self) -> impl Iterator<Item = &KvEvent> {
        self.steps.iter().flat_map(|step| &step.events)
    }
}

/// Give every block the chained sequence hash of its prefix (see the module documentation).
/// Returns each query's local hashes.
fn rehash(steps: &mut [Step]) -> Vec<Vec<LocalBlockHash>> {
    let mut chained: HashMap<SequenceHash, SequenceHash> = HashMap::new();
    let mut locals = Vec::with_capacity(steps.len());
    for step in steps.iter_mut() {
        locals.push(
            step.query
                .iter()
                .map(|hash| LocalBlockHash(hash.0))
                .collect(),
        );
        let mut parent = None;
        for hash in &mut step.query {
            let sequence = SequenceHash::chain(parent, LocalBlockHash(hash.0));
            let known = *chained.entry(*hash).or_insert(sequence);
            assert_eq!(known, sequence, "a trace id that names two prefixes");
            *hash = sequence;
            parent = Some(sequence);
        }
        for event in &mut step.events {
            match &mut event.data {
                KvEventData::Stored { parent, blocks, .. } => {
                    if let Some(parent) = parent {
                        *parent = chained[parent];
                    }
                    for block in blocks {
                        debug_assert_eq!(block.local.0, block.sequence.0);
                        block.sequence = chained[&block.sequence];
                    }
                }
                KvEventData::Removed { blocks } => {
                    for hash in blocks {
                        *hash = chained[hash];
                    }
                }
                _ => {}
            }
        }
    }
    locals
}

/// The exact model: one set of held blocks per worker; a worker's depth for a query is the number
/// of leading query blocks in its set.
struct Reference {
    held: Vec<HashSet<SequenceHash>>,
}

impl Reference {
    fn new(workers: u64) -> Reference {
        Reference {
            held: (0..workers).map(|_| HashSet::new()).collect(),
        }
    }

    fn apply(&mut self, event: &KvEvent) {
        let held = &mut self.held[event.worker.worker as usize];
        match &event.data {
            KvEventData::Stored { blocks, .. } => {
                held.extend(blocks.iter().map(|block| block.sequence));
            }
            KvEventData::Removed { blocks } => {
                for hash in blocks {
                    held.remove(hash);
                }
            }
            KvEventData::Cleared => held.clear(),
            _ => unreachable!("the generator emits stores, removals and clears only"),
        }
    }

    fn depths(&self, query: &[SequenceHash]) -> Vec<(u64, u32)> {
        self.held
            .iter()
            .enumerate()
            .filter_map(|(worker, held)| {
                let depth = query.iter().take_while(|hash| held.contains(hash)).count();
                (depth > 0).then_some((worker as u64, depth as u32))
            })
            .collect()
    }

    fn resident_pairs(&self) -> usize {
        self.held.iter().map(HashSet::len).sum()
    }

    fn resident_blocks(&self) -> usize {
        self.held.iter().flatten().collect::<HashSet<_>>().len()
    }
}
