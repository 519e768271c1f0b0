//! The cost of an output format's token mask, against unconstrained decoding in the same run:
//! one request, the same chat prompt, 64 greedy tokens, without a format and with a JSON schema
//! (llguidance computes the mask of allowed tokens before each token and advances its parser
//! after it). The schema asks for at least 50 small objects, so the answer is still inside the
//! format after 64 tokens and both requests decode exactly as many.
//!
//! `cargo bench -p dynamo-candle --bench structured`; the figure is the ratio of the two times.

#![expect(clippy::unwrap_used, reason = "benches fail loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest, OutputFormat};
use serde_json::json;
use tokio::runtime::Runtime;

const OUTPUT: u32 = 64;

/// A fresh cache namespace per measured request, so each computes its prompt.
fn salt() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("structured-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn request(prompt: &[u32], format: Option<OutputFormat>) -> GenerateRequest {
    let salt = salt();
    let mut request =
        GenerateRequest::new(salt.as_str(), "smollm2", prompt.to_vec()).with_max_tokens(OUTPUT);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = format.is_none();
    request.cache_salt = Some(salt);
    request.format = format;
    request
}

fn benches(c: &mut Criterion) {
    let prompt = support::chat_prompt("List fifty people as JSON, with their name and age.");
    let person = json!({"type": "object", "additionalProperties": false,
        "required": ["name", "age"],
        "properties": {"name": {"type": "string", "maxLength": 12},
                       "age": {"type": "integer", "minimum": 0, "maximum": 120}}});
    let schema = json!({"type": "object", "additionalProperties": false, "required": ["people"],
        "properties": {"people": {"type": "array", "items": person, "minItems": 50}}});
    let format = OutputFormat::JsonSchema {
        schema: schema.to_string(),
    };
    let runtime = Runtime::new().unwrap();
    let weights = LlamaWeights::load(support::model_path(), &Device::Cpu).unwrap();
    let mut engine = CandleEngine::start(weights, CandleConfig::default(), None).unwrap();
    // The grammar engine's tables are built on the first request with a format: not measured.
    let first = runtime
        .block_on(engine.generate_all(request(&prompt, Some(format.clone()))))
        .unwrap();
    assert_eq!(
        first.tokens.len(),
        OUTPUT as usize,
        "the answer fills the budget"
    );

    let mut group = c.benchmark_group("structured_decode_64");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(u64::from(OUTPUT)));
    group.bench_function("unconstrained", |b| {
        b.iter(|| {
            runtime
                .block_on(engine.generate_all(request(&prompt, None)))
                .unwrap()
        });
    });
    group.bench_function("json_schema", |b| {
        b.iter(|| {
            runtime
                .block_on(engine.generate_all(request(&prompt, Some(format.clone()))))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(structured, benches);
criterion_main!(structured);
