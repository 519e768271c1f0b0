//! Preemption by recompute on the real SmolLM2-135M-Instruct: a KV cache too small for every
//! running sequence to grow preempts the newest, which later computes its tokens again and
//! ends with the answer it gives alone; a sequence alone ends at what the cache holds; requests
//! held for room count as waiting.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{BlockSize, EngineExt, FinishReason, GenerateRequest, Generation};
use futures::StreamExt;
use support::chat_prompt;

const BLOCK: usize = 8;

fn engine(blocks: u32) -> CandleEngine {
    engine_running(blocks, CandleConfig::default().max_running)
}

fn engine_running(blocks: u32, max_running: usize) -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    let config = CandleConfig {
        blocks,
        block_size: BlockSize::new(BLOCK as u32).unwrap(),
        max_running,
        ..CandleConfig::default()
    };
    CandleEngine::start(weights, config, None).unwrap()
}

/// `max_tokens` tokens whatever the model says; greedy, or sampled with `seed`.
fn request(id: &str, question: &str, max_tokens: u32, seed: Option<u64>) -> GenerateRequest {
    let mut request =
        GenerateRequest::new(id, "smollm2", chat_prompt(question)).with_max_tokens(max_tokens);
    request.stop.ignore_eos = true;
    request.sampling.temperature = Some(if seed.is_some() { 0.8 } else { 0.0 });
    request.sampling.seed = seed;
    request
}

fn requests() -> Vec<GenerateRequest> {
    vec![
        request("greedy-1", "Name three rivers.", 24, None),
        request("seeded", "Write a line about the sea.", 24, Some(7)),
        request("greedy-2", "What is a prime number?", 24, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempted_sequences_end_with_the_answers_they_give_alone() {
    let mut roomy = engine(512);
    let mut alone = Vec::new();
    for request in requests() {
        alone.push(roomy.generate_all(request).await.unwrap().tokens);
    }
    assert_eq!(roomy.preemptions(), 0);

    // Room for every prompt and one block more, so the sequences cannot all grow.
    let prompts: usize = requests()
        .iter()
        .map(|r| r.tokens.len().div_ceil(BLOCK))
        .sum();
    let grown: usize = requests()
        .iter()
        .map(|r| (r.tokens.len() + 24).div_ceil(BLOCK))
        .sum();
    assert!(prompts + 1 < grown);
    let tight = engine(u32::try_from(prompts + 1).unwrap());
    let together: Vec<Generation> =
        futures::future::join_all(requests().into_iter().map(|request| {
            let mut engine = tight.clone();
            async move { engine.generate_all(request).await.unwrap() }
        }))
        .await;
    assert!(
        tight.preemptions() > 0,
        "the cache was too small to run all three"
    );
    for (generation, alone) in together.iter().zip(&alone) {
        assert_eq!(generation.finish_reason, Some(FinishReason::Length));
        assert_eq!(&generation.tokens, alone);
    }
    assert_eq!(tight.counters().in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_alone_ends_with_length_when_the_cache_is_full() {
    let blocks = 6;
    let mut engine = engine(blocks);
    let request = request("long", "Tell me a long story.", 1000, None);
    let prompt = request.tokens.len();
    assert!(prompt < blocks as usize * BLOCK);
    let generation = engine.generate_all(request).await.unwrap();
    assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    // As vLLM's max_model_len: prompt and output together fill the cache, no more.
    assert_eq!(generation.tokens.len(), blocks as usize * BLOCK - prompt);
    assert_eq!(engine.preemptions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_for_room_count_as_waiting() {
    // Room for one sequence's blocks, and two running at most: the second request waits on the
    // model thread for blocks, the third in the queue for a running slot.
    let engine = engine_running(8, 2);
    assert_eq!(engine.waiting_requests(), 0);
    let questions = ["Name three rivers.", "Name a fruit.", "Say hello."];
    let all = futures::future::join_all(questions.iter().enumerate().map(|(i, question)| {
        let mut engine = engine.clone();
        let request = request(&format!("r{i}"), question, 20, None);
        async move { engine.generate_all(request).await.unwrap() }
    }));
    let watch = async {
        let mut most = 0;
        let mut ticks = tokio::time::interval(Duration::from_millis(5));
        while most < 2 {
            ticks.tick().await;
            most = most.max(engine.waiting_requests());
        }
        most
    };
    let (generations, most) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(all, watch) })
            .await
            .unwrap();
    assert_eq!(most, 2);
    assert!(generations.iter().all(|g| g.tokens.len() == 20));
    assert_eq!(engine.waiting_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_sequence_whose_client_leaves_stops_waiting() {
    let first = request("first", "Name three rivers.", 45, None);
    let second = request("second", "Name a fruit.", 45, None);
    // Room for both prompts and one block more: as they grow the second (the newest) is
    // preempted, and it cannot start again before the first ends.
    let prompts = first.tokens.len().div_ceil(BLOCK) + second.tokens.len().div_ceil(BLOCK);
    let first_grown = (first.tokens.len() + 45).div_ceil(BLOCK);
    assert!(first_grown + second.tokens.len().div_ceil(BLOCK) > prompts + 1);
    let engine = engine(u32::try_from(prompts + 1).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let first = tokio::spawn({
        let mut engine = engine.clone();
        async move { engine.generate_all(first).await.unwrap() }
    });
    while engine.counters().in_use == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first never started"
        );
        ticks.tick().await;
    }
    let mut stream = engine.clone().generate(second).await.unwrap();
    stream.next().await.unwrap().unwrap();
    while engine.preemptions() == 0 || engine.waiting_requests() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never preempted");
        ticks.tick().await;
    }
    drop(stream);
    while engine.waiting_requests() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "still waiting");
        ticks.tick().await;
    }
    assert!(
        !first.is_finished(),
        "the second should have left while the first ran"
    );
    assert_eq!(first.await.unwrap().tokens.len(), 45);
    assert_eq!(engine.preemptions(), 1);
}
