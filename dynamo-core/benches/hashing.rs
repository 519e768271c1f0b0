//! Block hashing throughput, against one XXH3 pass over the same bytes as the baseline.
//!
//! The baseline hashes the whole prompt in one call: it is the floor for any scheme that reads
//! every token once. The ratio of the two is the cost of cutting into blocks and chaining.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{BlockHasher, BlockSize};
use std::hint::black_box;

fn tokens(n: u32) -> Vec<u32> {
    // A deterministic pseudo-random prompt (xorshift), so no block repeats.
    let mut state = 0x9e37_79b9_u32;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state % 49_152
        })
        .collect()
}

fn hashing(c: &mut Criterion) {
    let prompt = tokens(32 * 1024);
    let bytes: Vec<u8> = prompt.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut group = c.benchmark_group("hash_32k_tokens");
    group.throughput(Throughput::Bytes(bytes.len() as u64));

    group.bench_function("baseline_xxh3_one_pass", |b| {
        b.iter(|| xxhash_rust::xxh3::xxh3_64_with_seed(black_box(&bytes), 1337))
    });
    for block_size in [16, 64] {
        let hasher = BlockHasher::new(BlockSize::new(block_size).expect("non-zero"));
        group.bench_function(format!("hash_blocks_bs{block_size}"), |b| {
            b.iter(|| hasher.hash_blocks(black_box(&prompt)))
        });
        group.bench_function(format!("incremental_per_token_bs{block_size}"), |b| {
            b.iter(|| {
                let mut incremental = hasher.incremental();
                let mut completed = 0;
                for &token in black_box(&prompt) {
                    completed += usize::from(incremental.push(token).is_some());
                }
                completed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
