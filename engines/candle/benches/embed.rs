//! Sentence embeddings with all-MiniLM-L6-v2: 32 short sentences embedded as one batch against
//! the same 32 embedded one at a time (the baseline), in the same run. Throughput is in
//! embeddings per second.
//!
//! `cargo bench -p dynamo-candle --bench embed`

#![expect(clippy::unwrap_used, reason = "benches fail loudly")]

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_candle::{BertEmbedder, EmbedderConfig};
use dynamo_core::{BoxEmbedder, EmbedRequest, Embeddings};
use dynamo_openai::EmbeddingModel;

/// 32 short sentences, 6 to 13 tokens each.
const SENTENCES: [&str; 32] = [
    "The cat sits on the mat",
    "A cat is sitting on a mat",
    "Stock prices fell sharply",
    "The weather is lovely today",
    "She plays the violin every evening",
    "Our train was delayed by an hour",
    "He bought fresh bread at the bakery",
    "The meeting moved to Thursday",
    "Rain is expected over the weekend",
    "The children built a sandcastle",
    "Interest rates rose again this quarter",
    "The museum opens at nine",
    "A dog chased the ball across the park",
    "The recipe needs two eggs and flour",
    "Traffic was light on the motorway",
    "The river flooded the lower fields",
    "They planted tomatoes in the garden",
    "The server restarted after the update",
    "Her novel won a literary prize",
    "The bridge is closed for repairs",
    "Coffee prices climbed in the spring",
    "The team celebrated their victory",
    "Snow covered the mountain peaks",
    "The library extended its hours",
    "A new bakery opened downtown",
    "The concert sold out in minutes",
    "The printer is out of paper",
    "Farmers hope for a good harvest",
    "The airport added three new routes",
    "He fixed the bicycle chain himself",
    "The committee approved the budget",
    "Birds gathered on the telephone wire",
];

fn benches(c: &mut Criterion) {
    let cache = dynamo_assets::cache_dir().unwrap();
    let dir = dynamo_assets::ALL_MINILM_L6_V2.fetch(&cache).unwrap();
    let embedder = BertEmbedder::load(&dir, &Device::Cpu, EmbedderConfig::default()).unwrap();
    // The gateway's tokenizer for the model; its embedder is never called here.
    let unused = tower::service_fn(|_: EmbedRequest| async { Ok(Embeddings::default()) });
    let tokenizer = EmbeddingModel::from_tokenizer_file(
        "all-minilm-l6-v2",
        BoxEmbedder::new(unused),
        dir.join("tokenizer.json"),
        384,
        512,
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = SENTENCES
        .iter()
        .map(|text| tokenizer.encode(text).unwrap())
        .collect();
    let inputs: Vec<&[u32]> = ids.iter().map(|input| &input[..]).collect();

    let mut group = c.benchmark_group("embed_32_sentences");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.sample_size(20);
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| {
            for input in &inputs {
                embedder.embed(&[input]).unwrap();
            }
        });
    });
    group.bench_function("batched", |b| b.iter(|| embedder.embed(&inputs).unwrap()));
    group.finish();
}

criterion_group!(embed, benches);
criterion_main!(embed);
