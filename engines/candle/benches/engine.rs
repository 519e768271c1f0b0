//! The candle engine against a plain single-request candle loop of the same model
//! (candle-transformers' `quantized_llama`), in the same run:
//!
//! - `decode`: one request, a 37-token chat prompt and 32 greedy tokens, end to end. The
//!   baseline and `ours_quantized` run the same quantized matrices; `ours_f32` is the engine's
//!   default (dequantized matrices).
//! - `ttft`: the first token of a 512-token prompt with 0, 25, 50 or 90% of it already cached.
//! - `concurrency`: 1, 4 or 8 requests of 32 tokens at once (throughput in output tokens).
//! - `kv_pressure_8_requests`: 8 such requests in a cache of 64 blocks (room for all) and of 28
//!   (room for their prompts, not for all their output: preemption by recompute).
//!
//! Every measured request carries its own cache salt, so it reuses exactly what the bench put in
//! the cache for it and nothing else.

#![expect(clippy::unwrap_used, reason = "benches fail loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};
use support::plain_candle_greedy as baseline;
use tokio::runtime::Runtime;

const OUTPUT: u32 = 32;

/// A fresh cache namespace per measured request.
fn salt() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn request(prompt: &[u32], max_tokens: u32, salt: &str) -> GenerateRequest {
    let mut request =
        GenerateRequest::new(salt, "smollm2", prompt.to_vec()).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = true;
    request.cache_salt = Some(salt.to_owned());
    request
}

fn engine(weights: &LlamaWeights) -> CandleEngine {
    CandleEngine::start(weights.clone(), CandleConfig::default(), None).unwrap()
}

fn benches(c: &mut Criterion) {
    let path = support::model_path();
    let prompt = support::chat_prompt("What is the capital of France?");
    let runtime = Runtime::new().unwrap();
    let f32_weights = LlamaWeights::load(path, &Device::Cpu).unwrap();
    let quantized = LlamaWeights::load_quantized(path, &Device::Cpu).unwrap();
    let mut plain = support::plain_candle();

    let mut decode = c.benchmark_group("decode");
    decode
        .sample_size(10)
        .throughput(Throughput::Elements(u64::from(OUTPUT)));
    decode.bench_function("candle_baseline_quantized", |b| {
        b.iter(|| baseline(&mut plain, &prompt, OUTPUT));
    });
    for (name, weights) in [("ours_quantized", &quantized), ("ours_f32", &f32_weights)] {
        let mut ours = engine(weights);
        decode.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(ours.generate_all(request(&prompt, OUTPUT, &salt())))
                    .unwrap()
            });
        });
    }
    decode.finish();

    // A 512-token prompt: the chat prompt's text repeated.
    let long: Vec<u32> = prompt.iter().copied().cycle().take(512).collect();
    let mut ttft = c.benchmark_group("ttft_512_tokens");
    ttft.sample_size(10);
    ttft.bench_function("candle_baseline_quantized", |b| {
        b.iter(|| baseline(&mut plain, &long, 1))
    });
    let mut ours_quantized = engine(&quantized);
    ttft.bench_function("ours_quantized", |b| {
        b.iter(|| {
            runtime
                .block_on(ours_quantized.generate_all(request(&long, 1, &salt())))
                .unwrap()
        });
    });
    let mut ours = engine(&f32_weights);
    for cached_percent in [0usize, 25, 50, 90] {
        ttft.bench_with_input(
            BenchmarkId::new("ours_f32_cached_percent", cached_percent),
            &cached_percent,
            |b, &percent| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let salt = salt();
                        let cached = long.len() * percent / 100;
                        if cached > 0 {
                            runtime
                                .block_on(ours.generate_all(request(&long[..cached], 1, &salt)))
                                .unwrap();
                        }
                        let start = Instant::now();
                        runtime
                            .block_on(ours.generate_all(request(&long, 1, &salt)))
                            .unwrap();
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
    }
    ttft.finish();

    // Attention across rayon's pool against the model thread alone: the chat prompt's 32
    // tokens (short rows, little to attend to), and a 1,024-token prompt's first token and 32
    // tokens after it (each decode step attends to 1,024 positions and more).
    let long: Vec<u32> = prompt.iter().copied().cycle().take(1024).collect();
    let mut attention = c.benchmark_group("attention");
    attention.sample_size(10);
    for parallel in [true, false] {
        let config = CandleConfig {
            parallel_attention: parallel,
            ..CandleConfig::default()
        };
        let mut ours = CandleEngine::start(f32_weights.clone(), config, None).unwrap();
        let threads = if parallel { "parallel" } else { "one_thread" };
        for (case, tokens, output) in [
            ("chat_prompt_32_tokens", &prompt, OUTPUT),
            ("prompt_1024_first_token", &long, 1),
            ("prompt_1024_33_tokens", &long, 33),
        ] {
            attention.bench_function(BenchmarkId::new(threads, case), |b| {
                b.iter(|| {
                    runtime
                        .block_on(ours.generate_all(request(tokens, output, &salt())))
                        .unwrap()
                });
            });
        }
    }
    attention.finish();

    let mut concurrency = c.benchmark_group("concurrency");
    concurrency.sample_size(10);
    let ours = engine(&f32_weights);
    for clients in [1u64, 4, 8] {
        concurrency.throughput(Throughput::Elements(clients * u64::from(OUTPUT)));
        concurrency.bench_with_input(
            BenchmarkId::new("ours_f32_requests", clients),
            &clients,
            |b, &clients| {
                b.iter(|| {
                    runtime.block_on(futures::future::join_all((0..clients).map(|_| {
                        let mut engine = ours.clone();
                        let request = request(&prompt, OUTPUT, &salt());
                        async move { engine.generate_all(request).await.unwrap() }
                    })))
                });
            },
        );
    }
    concurrency.finish();

    // Eight requests at once in a cache with room for all of them, and in one with room for
    // their prompts and about half their growth, where the newest are preempted and compute
    // their tokens again.
    let mut pressure = c.benchmark_group("kv_pressure_8_requests");
    pressure
        .sample_size(10)
        .throughput(Throughput::Elements(8 * u64::from(OUTPUT)));
    for blocks in [64u32, 28] {
        let config = CandleConfig {
            blocks,
            ..CandleConfig::default()
        };
        let ours = CandleEngine::start(f32_weights.clone(), config, None).unwrap();
        let mut requests = 0;
        pressure.bench_with_input(
            BenchmarkId::new("ours_f32_kv_blocks", blocks),
            &blocks,
            |b, _| {
                b.iter(|| {
                    requests += 8;
                    runtime.block_on(futures::future::join_all((0..8).map(|_| {
                        let mut engine = ours.clone();
                        let request = request(&prompt, OUTPUT, &salt());
                        async move { engine.generate_all(request).await.unwrap() }
                    })))
                });
            },
        );
        println!(
            "{blocks} blocks: {} preemptions in {requests} requests",
            ours.preemptions()
        );
    }
    pressure.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
