//! The candle engine applies vLLM's penalties on the real SmolLM2-135M-Instruct: greedy with a
//! large repetition penalty never repeats a token of its answer, and a request's forked choices
//! count the prompt as the first one does.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::{BTreeMap, HashSet};

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest, TokenChunk};
use futures::StreamExt;
use support::chat_prompt;
use tower::ServiceExt;

fn engine() -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, CandleConfig::default(), None).unwrap()
}

fn greedy(id: &str, repetition_penalty: Option<f32>) -> GenerateRequest {
    let prompt = chat_prompt("Say the word 'yes' twenty times, separated by commas.");
    let mut request = GenerateRequest::new(id, "smollm2", prompt).with_max_tokens(16);
    request.stop.ignore_eos = true;
    request.sampling.temperature = Some(0.0);
    request.sampling.repetition_penalty = repetition_penalty;
    request
}

fn repeats(tokens: &[u32]) -> bool {
    tokens.iter().collect::<HashSet<_>>().len() < tokens.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_with_a_large_repetition_penalty_never_repeats_a_token() {
    let mut engine = engine();
    let plain = engine.generate_all(greedy("plain", None)).await.unwrap();
    assert_eq!(plain.tokens.len(), 16);
    assert!(
        repeats(&plain.tokens),
        "the prompt asks for repeats: {:?}",
        plain.tokens
    );
    let penalised = engine
        .generate_all(greedy("penalised", Some(10.0)))
        .await
        .unwrap();
    assert_eq!(penalised.tokens.len(), 16);
    assert!(!repeats(&penalised.tokens), "{:?}", penalised.tokens);

    // Each of n = 2 greedy choices, forked after the prompt, is the one-choice answer.
    let two = greedy("two", Some(10.0)).with_n(2);
    let stream = engine.clone().oneshot(two).await.unwrap();
    let chunks: Vec<TokenChunk> = stream.map(Result::unwrap).collect().await;
    let mut choices: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for chunk in chunks {
        choices
            .entry(chunk.index)
            .or_default()
            .extend(&chunk.tokens);
    }
    assert_eq!(choices.len(), 2);
    for tokens in choices.values() {
        assert_eq!(tokens, &penalised.tokens);
    }
}
