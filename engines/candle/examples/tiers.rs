//! The candle engine's lower KV tiers, measured against the same engine without them, in the
//! same run (SmolLM2-135M-Instruct, fetched once into the cache):
//!
//! - **Returning turn**: a conversation (a long system prompt, three turns of 16 greedy tokens)
//!   is evicted from the device pool by a prompt that fills it; then its fourth turn arrives.
//!   Its time to first token with a host tier (the history onboarded) against recomputing it
//!   (no tier), median of a few repetitions.
//! - **Mixed load**: four conversations of four turns and three one-off long prompts per
//!   round, two running at once, on a device pool too small for all of them: output tokens per
//!   second with and without a host tier.
//!
//! ```sh
//! cargo run -p dynamo-candle --example tiers
//! ```

#![expect(clippy::unwrap_used, reason = "an example that fails loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use candle_core::Device;
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{BlockSize, EngineExt, GenerateRequest};

const REPETITIONS: usize = 5;
const QUESTIONS: [&str; 4] = [
    "Which rule matters most?",
    "Why?",
    "Give an example of it.",
    "Summarise the rules in a sentence.",
];

/// A system prompt of about 400 tokens: the shared start of every conversation.
fn long_system() -> String {
    (1..=24)
        .map(|i| format!("Rule {i}: answer question number {i} politely, briefly and with care. "))
        .collect()
}

fn engine(weights: &LlamaWeights, blocks: u32, host_blocks: u32) -> CandleEngine {
    let config = CandleConfig {
        blocks,
        block_size: BlockSize::new(16).unwrap(),
        max_running: 2,
        host_blocks,
        ..CandleConfig::default()
    };
    CandleEngine::start(weights.clone(), config, None).unwrap()
}

/// One greedy request: its tokens, its time and the prompt tokens it reused.
async fn ask(
    engine: &mut CandleEngine,
    prompt: &[u32],
    max_tokens: u32,
    salt: &str,
) -> Option<(Vec<u32>, Duration, u32)> {
    let mut request =
        GenerateRequest::new(salt, "smollm2", prompt.to_vec()).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = true;
    request.cache_salt = Some(salt.to_owned());
    let start = Instant::now();
    let generation = engine.generate_all(request).await.ok()?;
    let cached = generation.usage.map_or(0, |usage| usage.cached_tokens);
    Some((generation.tokens, start.elapsed(), cached))
}

/// A fresh prompt of `tokens` tokens that shares nothing cached.
fn filler(tokens: usize, salt: &str) -> Vec<u32> {
    support::chat_prompt(&format!("{salt}: {}", long_system()))
        .into_iter()
        .cycle()
        .take(tokens)
        .collect()
}

/// The first three turns of a conversation, then a prompt that evicts it, then the timed
/// fourth turn: its time to first token and the tokens it reused.
async fn returning_turn(engine: &mut CandleEngine, blocks: u32, salt: &str) -> (Duration, u32) {
    let mut history = support::system_chat_prompt(&long_system(), QUESTIONS[0]);
    for question in &QUESTIONS[1..] {
        let (answer, _, _) = ask(engine, &history, 16, salt).await.unwrap();
        history.extend(answer);
        history.extend(support::next_turn(question));
    }
    let evict = filler((blocks as usize - 1) * 16, &format!("{salt}-filler"));
    ask(engine, &evict, 1, &format!("{salt}-filler"))
        .await
        .unwrap();
    let (_, ttft, cached) = ask(engine, &history, 1, salt).await.unwrap();
    (ttft, cached)
}

/// Four rounds of four conversation turns and three one-off prompts, all of a round at once:
/// the output tokens, the wall time and the requests that failed.
async fn mixed_load(engine: &CandleEngine, tag: &str) -> (usize, Duration, usize) {
    let mut histories: Vec<Vec<u32>> = (0..4)
        .map(|c| support::system_chat_prompt(&long_system(), &format!("I am user {c}. Hello.")))
        .collect();
    let start = Instant::now();
    let (mut tokens, mut failed) = (0, 0);
    for (round, next_question) in QUESTIONS.iter().enumerate() {
        let turns = histories.iter().enumerate().map(|(c, history)| {
            let mut engine = engine.clone();
            let prompt = history.clone();
            let salt = format!("{tag}-conversation-{c}");
            async move { ask(&mut engine, &prompt, 16, &salt).await }
        });
        let one_offs = (0..3).map(|i| {
            let mut engine = engine.clone();
            let salt = format!("{tag}-once-{round}-{i}");
            async move { ask(&mut engine, &filler(300, &salt), 16, &salt).await }
        });
        let (turns, one_offs) = futures::future::join(
            futures::future::join_all(turns),
            futures::future::join_all(one_offs),
        )
        .await;
        for (history, answer) in histories.iter_mut().zip(turns) {
            let Some((answer, _, _)) = answer else {
                failed += 1;
                continue;
            };
            tokens += answer.len();
            history.extend(answer);
            history.extend(support::next_turn(next_question));
        }
        for one_off in one_offs {
            match one_off {
                Some((answer, _, _)) => tokens += answer.len(),
                None => failed += 1,
            }
        }
    }
    (tokens, start.elapsed(), failed)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let weights = LlamaWeights::load(support::model_path(), &Device::Cpu).unwrap();
    let blocks = 48;
    let mut recompute = engine(&weights, blocks, 0);
    let mut hosted = engine(&weights, blocks, 256);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut reused = (0, 0);
    for repetition in 0..REPETITIONS {
        let salt = format!("turn-{repetition}");
        let (ttft, cached) = returning_turn(&mut recompute, blocks, &salt).await;
        without.push(ttft);
        reused.0 = cached;
        let (ttft, cached) = returning_turn(&mut hosted, blocks, &salt).await;
        with.push(ttft);
        reused.1 = cached;
    }
    let (without, with) = (median(without), median(with));
    println!("returning turn, time to first token (median of {REPETITIONS}):");
    println!(
        "  recomputed (no tier): {without:>10.3?}  reused {} tokens",
        reused.0
    );
    println!(
        "  host tier:            {with:>10.3?}  reused {} tokens",
        reused.1
    );
    println!("  ratio: {:.3}", with.as_secs_f64() / without.as_secs_f64());
    println!("  host tier counters: {:?}", hosted.offload_counters());

    let blocks = 80;
    let plain = engine(&weights, blocks, 0);
    let tiered = engine(&weights, blocks, 512);
    let (tokens_without, time_without, failed_without) = mixed_load(&plain, "plain").await;
    let (tokens_with, time_with, failed_with) = mixed_load(&tiered, "tiered").await;
    let rate = |tokens: usize, time: Duration| tokens as f64 / time.as_secs_f64();
    println!("mixed load ({blocks} device blocks, 2 running at once):");
    println!(
        "  no tier:   {tokens_without} tokens in {time_without:.2?} = {:.1} tokens/s ({failed_without} failed)",
        rate(tokens_without, time_without)
    );
    println!(
        "  host tier: {tokens_with} tokens in {time_with:.2?} = {:.1} tokens/s ({failed_with} failed)",
        rate(tokens_with, time_with)
    );
    println!(
        "  throughput ratio: {:.3}",
        rate(tokens_with, time_with) / rate(tokens_without, time_without)
    );
    println!("  host tier counters: {:?}", tiered.offload_counters());
}
