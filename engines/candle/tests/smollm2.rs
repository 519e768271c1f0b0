//! The candle engine on the real SmolLM2-135M-Instruct (fetched once into the cache by
//! `dynamo-assets`): answers, prefix reuse, concurrency, cancellation and KV events.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{BlockSize, EngineExt, FinishReason, GenerateRequest, KvEvent, KvEventData};
use dynamo_openai::Tokenizer;
use futures::StreamExt;
use support::chat_prompt;
use tokio::sync::mpsc;

fn tokenizer() -> &'static Tokenizer {
    support::preprocessing().tokenizer()
}

fn engine(config: CandleConfig, events: Option<mpsc::Sender<KvEvent>>) -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, config, events).unwrap()
}

fn greedy(id: &str, prompt: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    let mut request = GenerateRequest::new(id, "smollm2", prompt).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request
}

async fn answer(engine: &mut CandleEngine, request: GenerateRequest) -> (Vec<u32>, usize) {
    let generation = engine.generate_all(request).await.unwrap();
    let cached = generation.usage.map_or(0, |u| u.cached_tokens as usize);
    (generation.tokens, cached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_answer_names_paris() {
    let mut engine = engine(CandleConfig::default(), None);
    let request = greedy("paris", chat_prompt("What is the capital of France?"), 12);
    let (tokens, _) = answer(&mut engine, request).await;
    let text = tokenizer().decode(&tokens, true).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_reuse_gives_the_same_output_as_computing_from_scratch() {
    let config = CandleConfig {
        block_size: BlockSize::new(8).unwrap(),
        ..CandleConfig::default()
    };
    let base = chat_prompt("Name three colours of the rainbow, and say why the sky is blue.");
    // Prompts sharing prefixes of several lengths, ending inside a block and on its boundary.
    let prompts: Vec<Vec<u32>> = [base.len() - 3, base.len() - 8, base.len()]
        .iter()
        .map(|&cut| {
            let mut prompt = base[..cut].to_vec();
            prompt.extend(tokenizer().encode(" Answer briefly.").unwrap());
            prompt
        })
        .collect();
    let mut warm = engine(config.clone(), None);
    let mut cached_total = 0;
    let mut warm_answers = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let (tokens, cached) = answer(&mut warm, greedy(&format!("w{i}"), prompt.clone(), 6)).await;
        cached_total += cached;
        warm_answers.push(tokens);
    }
    assert!(cached_total > 0, "later prompts reused cached blocks");
    for (i, prompt) in prompts.iter().enumerate() {
        let mut cold = engine(config.clone(), None);
        let (tokens, cached) = answer(&mut cold, greedy(&format!("c{i}"), prompt.clone(), 6)).await;
        assert_eq!(cached, 0);
        assert_eq!(tokens, warm_answers[i], "prompt {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_give_the_answers_they_give_alone() {
    let questions = ["What is 2 + 2?", "Name a fruit.", "Say hello in French."];
    let mut alone = Vec::new();
    let mut first = engine(CandleConfig::default(), None);
    for (i, question) in questions.iter().enumerate() {
        alone.push(
            answer(
                &mut first,
                greedy(&format!("a{i}"), chat_prompt(question), 8),
            )
            .await
            .0,
        );
    }
    let fresh = engine(CandleConfig::default(), None);
    let together = futures::future::join_all(questions.iter().enumerate().map(|(i, question)| {
        let mut engine = fresh.clone();
        async move {
            answer(
                &mut engine,
                greedy(&format!("t{i}"), chat_prompt(question), 8),
            )
            .await
            .0
        }
    }))
    .await;
    assert_eq!(together, alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_stream_releases_the_blocks() {
    let mut engine = engine(CandleConfig::default(), None);
    let mut stream = engine
        .generate(greedy(
            "cancel",
            chat_prompt("Tell me a long story about a dragon."),
            200,
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    assert!(engine.counters().in_use > 0);
    drop(stream);
    let mut waited = Duration::ZERO;
    while engine.counters().in_use > 0 {
        assert!(waited < Duration::from_secs(10), "{:?}", engine.counters());
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // The prompt's full blocks stay cached for the next request.
    assert!(engine.counters().cached > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_match_the_blocks_cached() {
    // A small pool, so that later requests evict earlier blocks.
    let config = CandleConfig {
        blocks: 24,
        block_size: BlockSize::new(8).unwrap(),
        ..CandleConfig::default()
    };
    let (sender, mut events) = mpsc::channel(4096);
    let mut engine = engine(config, Some(sender));
    let mut stored = std::collections::HashSet::new();
    for (i, question) in [
        "What is rust?",
        "Why is the sea salty?",
        "Who wrote Hamlet?",
    ]
    .iter()
    .enumerate()
    {
        let generation = engine
            .generate_all(greedy(&format!("e{i}"), chat_prompt(question), 4))
            .await
            .unwrap();
        assert_ne!(generation.finish_reason, Some(FinishReason::Cancelled));
        while let Ok(event) = events.try_recv() {
            match event.data {
                KvEventData::Stored { blocks, .. } => {
                    stored.extend(blocks.iter().map(|b| b.sequence))
                }
                KvEventData::Removed { blocks } => {
                    for hash in blocks {
                        assert!(stored.remove(&hash), "removed a block never stored");
                    }
                }
                _ => {}
            }
        }
    }
    let cached = engine.counters().cached;
    assert_eq!(
        stored.len(),
        cached,
        "every registered block is announced, every eviction too"
    );
}
