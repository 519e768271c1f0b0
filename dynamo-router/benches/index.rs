//! Prefix index throughput on the Mooncake trace: event ingest, and lookups at each request's
//! arrival, at 8, 64 and 256 workers with a 4,096-block LRU cache per worker.
//!
//! The baseline, measured in the same run, is a naive index that keeps one hash set per worker
//! and answers a lookup by walking every worker's set.

use std::collections::{HashMap, HashSet};
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{BlockSize, KvEventData, SequenceHash, WorkerId};
use dynamo_router::KvIndex;

#[path = "support/trace_events.rs"]
mod trace_events;

/// The naive baseline: a set of hashes per worker.
#[derive(Default)]
struct NaiveIndex {
    held: HashMap<WorkerId, HashSet<SequenceHash>>,
}

impl NaiveIndex {
    fn apply(&mut self, event: &dynamo_core::KvEvent) {
        let set = self.held.entry(event.worker).or_default();
        match &event.data {
            KvEventData::Stored { blocks, .. } => set.extend(blocks.iter().map(|b| b.sequence)),
            KvEventData::Removed { blocks } => blocks.iter().for_each(|b| {
                set.remove(b);
            }),
            _ => set.clear(),
        }
    }

    fn overlaps(&self, query: &[SequenceHash]) -> Vec<(WorkerId, usize)> {
        self.held
            .iter()
            .map(|(w, set)| (*w, query.iter().take_while(|h| set.contains(h)).count()))
            .filter(|(_, depth)| *depth > 0)
            .collect()
    }
}

fn index(c: &mut Criterion) {
    let trace = trace_events::load_trace();
    let block_size = BlockSize::new(512).expect("non-zero");
    for workers in [8u64, 64, 256] {
        let steps = trace_events::steps(&trace, workers, 4096, block_size);
        let events: Vec<_> = steps
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect();
        let mut group = c.benchmark_group(format!("index_w{workers}"));
        group.sample_size(10);

        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function("ingest_events", |b| {
            b.iter_batched(
                || KvIndex::new(block_size),
                |mut index| {
                    for event in &events {
                        let _ = index.apply(black_box(event));
                    }
                    index
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function("baseline_ingest_events", |b| {
            b.iter_batched(
                NaiveIndex::default,
                |mut index| {
                    for event in &events {
                        index.apply(black_box(event));
                    }
                    index
                },
                BatchSize::LargeInput,
            )
        });

        // Lookups against the state at the end of the trace.
        let mut ours = KvIndex::new(block_size);
        let mut naive = NaiveIndex::default();
        for event in &events {
            let _ = ours.apply(event);
            naive.apply(event);
        }
        group.throughput(Throughput::Elements(steps.len() as u64));
        group.bench_function("lookup", |b| {
            b.iter(|| {
                for step in &steps {
                    black_box(ours.overlaps(black_box(&step.query)));
                }
            })
        });
        group.bench_function("baseline_lookup", |b| {
            b.iter(|| {
                for step in &steps {
                    black_box(naive.overlaps(black_box(&step.query)));
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, index);
criterion_main!(benches);
