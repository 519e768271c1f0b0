//! The cost of decoding one engine KV-event message (vLLM's ZMQ layout: one `BlockStored` of
//! one block after a known parent, then its `BlockRemoved`) by a decoder that already knows
//! `N` of the engine's blocks, for N = 1,000 and 100,000. A decoder's work per message should
//! not grow with what the engine holds: the two figures of the same run should be close.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dynamo_core::{BlockSize, WorkerId};
use dynamo_transport::engine_events::EngineEventDecoder;
use rmpv::Value;

const BLOCK: u32 = 16;

/// One message: `[timestamp, events, rank]` with `events` given.
fn message(sequence: i64, events: Vec<Value>) -> [Vec<u8>; 3] {
    let batch = Value::Array(vec![Value::from(0.0), Value::Array(events), Value::Nil]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &batch).expect("a Vec takes any write");
    [b"kv".to_vec(), sequence.to_be_bytes().to_vec(), payload]
}

/// `BlockStored` of `hashes` after `parent`, each block's tokens made from its hash.
fn stored(hashes: &[u64], parent: Option<u64>) -> Value {
    let tokens = hashes
        .iter()
        .flat_map(|&hash| (0..u64::from(BLOCK)).map(move |i| Value::from((hash * 31 + i) % 50_000)))
        .collect();
    Value::Array(vec![
        Value::from("BlockStored"),
        Value::Array(hashes.iter().map(|&h| Value::from(h)).collect()),
        parent.map_or(Value::Nil, Value::from),
        Value::Array(tokens),
        Value::from(BLOCK),
        Value::Nil,
        Value::Nil,
    ])
}

fn removed(hashes: &[u64]) -> Value {
    Value::Array(vec![
        Value::from("BlockRemoved"),
        Value::Array(hashes.iter().map(|&h| Value::from(h)).collect()),
        Value::Nil,
    ])
}

fn decode(decoder: &mut EngineEventDecoder, frames: &[Vec<u8>; 3]) {
    let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    black_box(decoder.decode(&frames).expect("a well-formed message"));
}

fn one_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_event_message");
    for known in [1_000u64, 100_000] {
        let mut decoder =
            EngineEventDecoder::new(WorkerId::new(1), BlockSize::new(BLOCK).expect("non-zero"));
        // The engine's cache: `known` blocks in chains of 32.
        let hashes: Vec<u64> = (1..=known).collect();
        let mut sequence = 0;
        for chain in hashes.chunks(32) {
            decode(&mut decoder, &message(sequence, vec![stored(chain, None)]));
            sequence += 1;
        }
        // Each message stores one block after the first known one and removes it again.
        let fresh = known + 1;
        let store = stored(&[fresh], Some(1));
        let remove = removed(&[fresh]);
        group.bench_function(BenchmarkId::from_parameter(known), |b| {
            b.iter(|| {
                decode(&mut decoder, &message(sequence, vec![store.clone()]));
                decode(&mut decoder, &message(sequence + 1, vec![remove.clone()]));
                sequence += 2;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, one_message);
criterion_main!(benches);
