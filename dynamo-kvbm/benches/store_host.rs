//! The host tier against a plain `copy_from_slice` of the same block in the same run: a put
//! (copy into the slab, then the remove that makes room for the next), a get (copy out), and
//! the memcpy they are both bound by. Two block sizes: 64 tokens of SmolLM2-135M's KV in f32
//! (2,949,120 bytes) and of a 70B-class model in bf16 (20,971,520 bytes).
//!
//! `benches/vs_baselines.sh` turns the figures into ratios.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::SequenceHash;
use dynamo_kvbm::{BlockStore, HostStore};

/// 64-token blocks: (name, bytes).
const BLOCKS: [(&str, usize); 2] = [
    // 30 layers × (K, V) × 3 KV heads × 64 head dim × 64 tokens × 4 bytes.
    ("smollm2_135m_f32", 30 * 2 * 3 * 64 * 64 * 4),
    // 80 layers × (K, V) × 8 KV heads × 128 head dim × 64 tokens × 2 bytes.
    ("llama_70b_bf16", 80 * 2 * 8 * 128 * 64 * 2),
];

fn host(c: &mut Criterion) {
    for (name, bytes) in BLOCKS {
        let source: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut target = vec![0u8; bytes];
        let store = HostStore::new(bytes, 2).expect("a host store");
        let held = SequenceHash(1);
        let moving = SequenceHash(2);
        store.put(held, &source).expect("room");

        let mut group = c.benchmark_group(format!("host_{name}"));
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("memcpy", |b| {
            b.iter(|| target.copy_from_slice(black_box(&source)));
        });
        group.bench_function("put", |b| {
            b.iter(|| {
                store.put(moving, black_box(&source)).expect("room");
                store.remove(moving).expect("remove");
            });
        });
        group.bench_function("get", |b| {
            b.iter(|| store.get(held, black_box(&mut target)).expect("get"));
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = host
}
criterion_main!(benches);
