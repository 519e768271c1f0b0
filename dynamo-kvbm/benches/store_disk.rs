//! The disk tier's read and write bandwidth with direct I/O, at a configured queue depth, for
//! batches of blocks in page-aligned memory and in ordinary memory (one byte off alignment,
//! through the store's aligned bounce buffers). Reads and writes are staged through the store's
//! buffers (the defaults: `write`, `read`, and `*_bounce`); a second store without staging
//! gives `write_unstaged` and `read_unstaged` (straight from and into aligned memory,
//! `DiskConfig::stage_writes(false)`, `DiskConfig::stage_reads(false)`). Two block sizes: 64 tokens of
//! SmolLM2-135M's KV in f32 (2,949,120 bytes) and of a 70B-class model in bf16 (20,971,520
//! bytes).
//!
//! The file goes in `DYNAMO_KVBM_BENCH_DIR` (else the system's temporary directory), the queue
//! depth is `DYNAMO_KVBM_QUEUE_DEPTH` (else 4), and `DYNAMO_KVBM_BENCH_BLOCK` (a block's name
//! below) sets up that block size alone: `benches/vs_baselines.sh` sets all three to run fio
//! beside it on the same file system, case by case.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use dynamo_core::SequenceHash;
use dynamo_kvbm::{BlockStore, DiskConfig, DiskStore};

/// 64-token blocks: (name, bytes, blocks per batch), about 90–170 MB a batch.
const BLOCKS: [(&str, usize, usize); 2] = [
    // 30 layers × (K, V) × 3 KV heads × 64 head dim × 64 tokens × 4 bytes.
    ("smollm2_135m_f32", 30 * 2 * 3 * 64 * 64 * 4, 32),
    // 80 layers × (K, V) × 8 KV heads × 128 head dim × 64 tokens × 2 bytes.
    ("llama_70b_bf16", 80 * 2 * 8 * 128 * 64 * 2, 8),
];

/// Page-aligned memory for blocks.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn pages(bytes: usize) -> Vec<Page> {
    vec![Page::zeroed(); bytes.div_ceil(4096)]
}

fn disk(c: &mut Criterion) {
    let dir =
        std::env::var_os("DYNAMO_KVBM_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let depth = std::env::var("DYNAMO_KVBM_QUEUE_DEPTH")
        .ok()
        .and_then(|depth| depth.parse().ok())
        .unwrap_or(DiskConfig::DEFAULT_QUEUE_DEPTH);
    let only = std::env::var("DYNAMO_KVBM_BENCH_BLOCK").unwrap_or_default();
    for (name, bytes, batch) in BLOCKS {
        if !only.is_empty() && only != name {
            continue;
        }
        let path = dir.join(format!("kvbm-bench-{}-{name}.blocks", std::process::id()));
        let config = DiskConfig::new(&path, bytes, batch).queue_depth(depth);
        let store = DiskStore::open(config).expect("a disk store");
        let other_path = dir.join(format!("kvbm-bench-{}-{name}-2.blocks", std::process::id()));
        let other = DiskConfig::new(&other_path, bytes, batch)
            .queue_depth(depth)
            .stage_reads(false)
            .stage_writes(false);
        let other = DiskStore::open(other).expect("a disk store");
        eprintln!(
            "{name}: direct I/O {}, queue depth {depth}, file {}",
            store.direct_io(),
            path.display()
        );

        let mut aligned = pages(batch * bytes);
        let mut plain = vec![0u8; batch * bytes + 1];
        let hashes: Vec<SequenceHash> = (0..batch as u64).map(SequenceHash).collect();
        {
            let source: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
            source
                .iter_mut()
                .enumerate()
                .for_each(|(i, byte)| *byte = (i % 251) as u8);
            plain[1..].copy_from_slice(source);
        }

        let mut group = c.benchmark_group(format!("disk_{name}"));
        group.throughput(Throughput::Bytes((batch * bytes) as u64));
        // A batch takes 50–200 ms: the same number of batches in every sample keeps a short
        // measurement time short.
        group.sampling_mode(SamplingMode::Flat);
        let mut write = |label: &str, store: &DiskStore, source: &[u8]| {
            let blocks: Vec<(SequenceHash, &[u8])> = hashes
                .iter()
                .copied()
                .zip(source.chunks_exact(bytes))
                .collect();
            group.bench_function(label, |b| {
                b.iter(|| {
                    store.put_many(black_box(&blocks)).expect("room");
                    for &hash in &hashes {
                        store.remove(hash).expect("remove");
                    }
                });
            });
        };
        write("write", &store, bytemuck::cast_slice(&aligned));
        write("write_bounce", &store, &plain[1..]);
        write("write_unstaged", &other, bytemuck::cast_slice(&aligned));

        let source: &[u8] = bytemuck::cast_slice(&aligned);
        let blocks: Vec<(SequenceHash, &[u8])> = hashes
            .iter()
            .copied()
            .zip(source.chunks_exact(bytes))
            .collect();
        store.put_many(&blocks).expect("room");
        other.put_many(&blocks).expect("room");
        let into: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
        group.bench_function("read", |b| {
            b.iter(|| {
                store
                    .get_many(&hashes, black_box(&mut *into))
                    .expect("read")
            });
        });
        group.bench_function("read_unstaged", |b| {
            b.iter(|| {
                other
                    .get_many(&hashes, black_box(&mut *into))
                    .expect("read")
            });
        });
        group.bench_function("read_bounce", |b| {
            b.iter(|| {
                store
                    .get_many(&hashes, black_box(&mut plain[1..]))
                    .expect("read")
            });
        });
        group.finish();
        drop((store, other));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&other_path);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = disk
}
criterion_main!(benches);
