//! The cost of `n` choices from one forked request against `n` separate one-choice requests
//! sent together, on the candle engine in the same run (SmolLM2-135M-Instruct, fetched once
//! into the cache).
//!
//! Each round asks for four sampled answers of 32 tokens (end of sequence ignored, so every
//! answer has the same length) to a chat prompt of about 400 tokens, both ways, each way with a
//! cache salt of its own so that no round reuses another's blocks. Reported: the median wall
//! time of each way, output tokens per second, the prompt tokens the model computed, and the
//! ratio.
//!
//! ```sh
//! cargo run --release -p dynamo-candle --example choices
//! ```

#![expect(clippy::unwrap_used, reason = "an example that fails loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use candle_core::Device;
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};

const ROUNDS: u64 = 5;
const CHOICES: u32 = 4;
const TOKENS: u32 = 32;

/// A system prompt of about 400 tokens before the question.
fn prompt() -> Vec<u32> {
    let rules: String = (1..=24)
        .map(|i| format!("Rule {i}: answer question number {i} politely, briefly and with care. "))
        .collect();
    let text = format!("{rules}\nNow write one line of a poem about the sea.");
    support::chat_prompt(&text)
}

fn request(id: String, prompt: &[u32], n: u32, seed: u64, salt: String) -> GenerateRequest {
    let mut request = GenerateRequest::new(id, "smollm2", prompt.to_vec())
        .with_max_tokens(TOKENS)
        .with_n(n);
    request.sampling.temperature = Some(1.0);
    request.sampling.seed = Some(seed);
    request.stop.ignore_eos = true;
    request.cache_salt = Some(salt);
    request
}

/// One request of `CHOICES` choices: its wall time and output tokens.
async fn forked(engine: &CandleEngine, prompt: &[u32], round: u64) -> (Duration, usize) {
    let start = Instant::now();
    let salt = format!("forked-{round}");
    let request = request(format!("f{round}"), prompt, CHOICES, round, salt);
    let generation = engine.clone().generate_all(request).await.unwrap();
    (start.elapsed(), generation.tokens.len())
}

/// `CHOICES` requests of one choice each, sent together.
async fn separate(engine: &CandleEngine, prompt: &[u32], round: u64) -> (Duration, usize) {
    let start = Instant::now();
    let salt = format!("separate-{round}");
    let calls = (0..u64::from(CHOICES)).map(|index| {
        let request = request(
            format!("s{round}-{index}"),
            prompt,
            1,
            round + index,
            salt.clone(),
        );
        let mut engine = engine.clone();
        async move { engine.generate_all(request).await.unwrap().tokens.len() }
    });
    let tokens = futures::future::join_all(calls).await.into_iter().sum();
    (start.elapsed(), tokens)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let weights = LlamaWeights::load(support::model_path(), &Device::Cpu).unwrap();
    let engine = CandleEngine::start(weights, CandleConfig::default(), None).unwrap();
    let prompt = prompt();
    // Warm up both ways once.
    forked(&engine, &prompt, 1000).await;
    separate(&engine, &prompt, 1000).await;

    let (mut fork_times, mut separate_times) = (Vec::new(), Vec::new());
    let (mut fork_prefill, mut separate_prefill) = (0, 0);
    let mut tokens = 0;
    for round in 0..ROUNDS {
        let before = engine.prefilled_tokens();
        let (time, made) = forked(&engine, &prompt, round).await;
        fork_times.push(time);
        fork_prefill += engine.prefilled_tokens() - before;
        tokens = made;
        let before = engine.prefilled_tokens();
        let (time, made) = separate(&engine, &prompt, round).await;
        assert_eq!(made, tokens, "both ways generate the same number of tokens");
        separate_times.push(time);
        separate_prefill += engine.prefilled_tokens() - before;
    }
    let (fork, apart) = (median(fork_times), median(separate_times));
    let rate = |time: Duration| tokens as f64 / time.as_secs_f64();
    println!(
        "prompt {} tokens, {CHOICES} choices of {TOKENS} tokens, median of {ROUNDS} rounds",
        prompt.len()
    );
    println!(
        "n = {CHOICES}, one request:     {:>7.1} ms  {:>6.1} tokens/s  {:>5} prompt tokens computed per round",
        fork.as_secs_f64() * 1e3,
        rate(fork),
        fork_prefill / ROUNDS
    );
    println!(
        "{CHOICES} requests of n = 1:    {:>7.1} ms  {:>6.1} tokens/s  {:>5} prompt tokens computed per round",
        apart.as_secs_f64() * 1e3,
        rate(apart),
        separate_prefill / ROUNDS
    );
    println!(
        "forked / separate: {:.2}x the throughput",
        apart.as_secs_f64() / fork.as_secs_f64()
    );
}
