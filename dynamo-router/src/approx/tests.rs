//! The approximate index against a reference model, and its behaviour by example.

use super::*;

fn hashes(ids: &[u64]) -> Vec<SequenceHash> {
    ids.iter().map(|&id| SequenceHash(id)).collect()
}

#[test]
fn capacity_drops_the_least_recently_routed_blocks() {
    let config = ApproxConfig {
        ttl: None,
        capacity_blocks: Some(3),
    };
    let index = ApproxIndex::new(BlockSize::new(4).unwrap(), config);
    let worker = WorkerId::new(1);
    let now = Instant::now();
    index.record(worker, &hashes(&[1, 2]), now).unwrap();
    index.record(worker, &hashes(&[3]), now).unwrap();
    // Routing 1 again makes 2 the least recent; adding 4 evicts it.
    index.record(worker, &hashes(&[1]), now).unwrap();
    index.record(worker, &hashes(&[4]), now).unwrap();
    assert_eq!(index.predicted_blocks(), 3);
    assert_eq!(index.overlaps(&hashes(&[1, 2]), now).get(worker).device, 1);
    assert_eq!(index.overlaps(&hashes(&[3]), now).get(worker).device, 1);
}

#[test]
fn routing_again_renews_the_time_to_live() {
    let index = ApproxIndex::new(BlockSize::new(4).unwrap(), ApproxConfig::default());
    let worker = WorkerId::new(7);
    let start = Instant::now();
    let blocks = hashes(&[10, 11]);
    index.record(worker, &blocks, start).unwrap();
    index
        .record(worker, &blocks[..1], start + Duration::from_secs(100))
        .unwrap();
    let later = start + Duration::from_secs(150);
    assert_eq!(index.overlaps(&blocks, later).get(worker).device, 1);
    assert_eq!(index.predicted_blocks(), 1);
    index.remove_worker(worker);
    assert!(index.overlaps(&blocks, later).is_empty());
}

/// What the approximate index must answer: each worker's blocks with the time of their latest
/// routing, least recent first, expired at the same checks and trimmed to the same capacity.
#[derive(Default)]
struct Model {
    workers: std::collections::BTreeMap<u64, Vec<(u64, Instant)>>,
    next_expiry: Option<Instant>,
}

impl Model {
    fn record(&mut self, worker: u64, ids: &[u64], now: Instant, capacity: Option<usize>) {
        let held = self.workers.entry(worker).or_default();
        for &id in ids {
            held.retain(|&(h, _)| h != id);
            held.push((id, now));
        }
        if let Some(capacity) = capacity {
            let excess = held.len().saturating_sub(capacity);
            held.drain(..excess);
        }
    }

    fn overlaps(&mut self, ids: &[u64], now: Instant, ttl: Duration) -> Vec<(u64, u32)> {
        if self.next_expiry.is_none_or(|next| now >= next) {
            self.next_expiry = Some(now + ttl / 64);
            for held in self.workers.values_mut() {
                held.retain(|&(_, at)| now.saturating_duration_since(at) < ttl);
            }
        }
        let mut answer: Vec<(u64, u32)> = self
            .workers
            .iter()
            .map(|(&worker, held)| {
                let depth = ids
                    .iter()
                    .take_while(|id| held.iter().any(|(h, _)| h == *id))
                    .count();
                (worker, depth as u32)
            })
            .filter(|&(_, depth)| depth > 0)
            .collect();
        answer.sort_unstable();
        answer
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Ask about these blocks, then record them for the worker, as the selector does.
    Route(u64, Vec<u64>),
    /// Record without asking first (another replica's prediction).
    Record(u64, Vec<u64>),
    /// Ask only.
    Query(Vec<u64>),
    RemoveWorker(u64),
    /// Let this many seconds pass.
    Wait(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let blocks = || prop::collection::vec(0u64..8, 0..6);
    prop_oneof![
        4 => (0u64..3, blocks()).prop_map(|(w, b)| Op::Route(w, b)),
        1 => (0u64..3, blocks()).prop_map(|(w, b)| Op::Record(w, b)),
        2 => blocks().prop_map(Op::Query),
        1 => (0u64..3).prop_map(Op::RemoveWorker),
        2 => (0u64..6).prop_map(Op::Wait),
    ]
}

fn answer(overlaps: &Overlaps) -> Vec<(u64, u32)> {
    let mut answer: Vec<(u64, u32)> = overlaps
        .iter()
        .map(|(worker, overlap)| (worker.worker, overlap.device))
        .collect();
    answer.sort_unstable();
    answer
}

proptest::proptest! {
    /// Predictions recorded, renewed, expired, trimmed and forgotten exactly as the model
    /// says, whatever the order of blocks (repeats, no chain) and whether the request was
    /// asked about just before it was recorded.
    #[test]
    fn approximate_index_agrees_with_the_reference_model(
        ops in proptest::collection::vec(op(), 1..60),
        capacity in proptest::option::of(1usize..6),
        slack in 0usize..4,
        crowded in proptest::bool::ANY,
    ) {
        let ttl = Duration::from_secs(8);
        let config = ApproxConfig { ttl: Some(ttl), capacity_blocks: capacity };
        let index = ApproxIndex::with_slack(config, slack);
        let mut model = Model::default();
        let mut now = Instant::now();
        if crowded {
            // 70 other workers first: the workers under test get slots past 64, where a
            // query merges lists instead of intersecting masks.
            for other in 100..170 {
                index.record(WorkerId::new(other), &hashes(&[other]), now).unwrap();
                model.record(other, &[other], now, capacity);
            }
        }
        for op in ops {
            match op.clone() {
                Op::Route(worker, ids) => {
                    let expected = model.overlaps(&ids, now, ttl);
                    proptest::prop_assert_eq!(answer(&index.overlaps(&hashes(&ids), now)), expected);
                    index.record(WorkerId::new(worker), &hashes(&ids), now).unwrap();
                    model.record(worker, &ids, now, capacity);
                }
                Op::Record(worker, ids) => {
                    index.record(WorkerId::new(worker), &hashes(&ids), now).unwrap();
                    model.record(worker, &ids, now, capacity);
                }
                Op::Query(ids) => {
                    let expected = model.overlaps(&ids, now, ttl);
                    proptest::prop_assert_eq!(answer(&index.overlaps(&hashes(&ids), now)), expected);
                }
                Op::RemoveWorker(worker) => {
                    index.remove_worker(WorkerId::new(worker));
                    model.workers.remove(&worker);
                }
                Op::Wait(seconds) => now += Duration::from_secs(seconds),
            }
            let held: usize = model.workers.values().map(Vec::len).sum();
            proptest::prop_assert_eq!(index.predicted_blocks(), held as u64);
            // Compacted as they grow: the records of the worker just routed to stay within
            // twice its live blocks and the slack (evictions over capacity take live blocks
            // after the check).
            if let (None, Op::Route(worker, _) | Op::Record(worker, _)) = (capacity, &op) {
                let (touches, live) = index.inner.lock().store.touches(WorkerId::new(*worker));
                proptest::prop_assert!(touches <= 2 * live + slack);
            }
            let mut exported = index.export();
            exported.retain(|(_, blocks)| !blocks.is_empty());
            exported.sort_unstable_by_key(|(worker, _)| worker.worker);
            let expected: Vec<(WorkerId, Vec<SequenceHash>)> = model
                .workers
                .iter()
                .filter(|(_, held)| !held.is_empty())
                .map(|(&w, held)| (WorkerId::new(w), held.iter().map(|&(h, _)| SequenceHash(h)).collect()))
                .collect();
            proptest::prop_assert_eq!(exported, expected);
        }
    }
}

#[test]
fn forgotten_inline_holders_stay_dead_when_their_slot_is_reused_and_swept() {
    let config = ApproxConfig {
        ttl: Some(Duration::from_secs(10)),
        capacity_blocks: None,
    };
    let index = ApproxIndex::new(BlockSize::new(4).unwrap(), config);
    let (first, second) = (WorkerId::new(1), WorkerId::new(2));
    let start = Instant::now();
    // Expired, not looked up: the block's inline holder is left dead in the map.
    index.record(first, &hashes(&[1, 2, 3]), start).unwrap();
    let later = start + Duration::from_secs(11);
    assert!(index.overlaps(&hashes(&[1]), later).is_empty());
    assert_eq!(index.predicted_blocks(), 0);
    // The worker leaves and another takes its slot, numbering its touches on from the first
    // worker's: the dead holders stay dead.
    index.remove_worker(first);
    index.record(second, &hashes(&[9]), later).unwrap();
    assert!(index.overlaps(&hashes(&[1, 2]), later).is_empty());
    // A touch replaces a dead holder.
    index.record(second, &hashes(&[1]), later).unwrap();
    assert_eq!(
        index.overlaps(&hashes(&[1, 2]), later).get(second).device,
        1
    );
    assert_eq!(index.predicted_blocks(), 2);
    // A forced sweep (as every 2^30 touches) drops the dead and keeps the live.
    index.inner.lock().store.sweep();
    assert_eq!(
        index.overlaps(&hashes(&[1, 2]), later).get(second).device,
        1
    );
    assert_eq!(index.overlaps(&hashes(&[9]), later).get(second).device, 1);
    assert!(index.overlaps(&hashes(&[2, 3]), later).is_empty());
}
