//! The cost of an output format's token mask, against unconstrained decoding in the same run:
//! one request, the same chat prompt, 64 greedy tokens, without a format and with a JSON schema
//! (llguidance computes the mask of allowed tokens before each token and advances its parser
//! after it). The schema asks for at least 50 small objects, so the answer is still inside the
//! format after 64 tokens and both requests decode exactly as many.
//!
//! `cargo bench -p dynamo-candle --bench structured`; the figure is the ratio of the two times.
//! Since that ratio drowns in the noise of a shared machine, the bench also prints the grammar's
//! own time (masking and advancing, which the engine records per sequence in a `debug` event of
//! target `dynamo_candle::grammar`) as a fraction of the constrained requests' time.

#![expect(clippy::unwrap_used, reason = "benches fail loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest, OutputFormat};
use serde_json::json;
use tokio::runtime::Runtime;
use tracing::field::Visit;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Microseconds the grammar spent, summed over the engine's `dynamo_candle::grammar` events.
static MASK_US: AtomicU64 = AtomicU64::new(0);

/// Adds up the `mask_us` field of the engine's grammar events.
struct MaskTime;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MaskTime {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Field;
        impl Visit for Field {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "mask_us" {
                    MASK_US.fetch_add(value, Ordering::Relaxed);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if event.metadata().target() == "dynamo_candle::grammar" {
            event.record(&mut Field);
        }
    }
}

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
    // Global: the engine's events come from its model thread.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(MaskTime)).unwrap();
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

    // The grammar's own time against the whole of the same requests.
    MASK_US.store(0, Ordering::Relaxed);
    let mut total = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        runtime
            .block_on(engine.generate_all(request(&prompt, Some(format.clone()))))
            .unwrap();
        total += started.elapsed();
    }
    let mask = Duration::from_micros(MASK_US.load(Ordering::Relaxed));
    println!(
        "grammar time: {mask:?} of {total:?} for 5 requests of {OUTPUT} tokens ({:.2}% of the requests' time, {:.0} µs per token)",
        100.0 * mask.as_secs_f64() / total.as_secs_f64(),
        mask.as_secs_f64() * 1e6 / f64::from(5 * OUTPUT),
    );
}

criterion_group!(structured, benches);
criterion_main!(structured);
