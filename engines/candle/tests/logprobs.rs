//! Log-probabilities from the candle engine on the real SmolLM2-135M-Instruct: the model's own
//! distribution (log-softmax of the raw logits), the alternatives sorted, greedy picking the
//! most likely token.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};
use support::chat_prompt;

fn engine() -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, CandleConfig::default(), None).unwrap()
}

fn greedy(id: &str, max_tokens: u32, logprobs: Option<u32>) -> GenerateRequest {
    let prompt = chat_prompt("What is the capital of France?");
    let mut request = GenerateRequest::new(id, "smollm2", prompt).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request.sampling.logprobs = logprobs;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_tokens_have_the_largest_logprob_of_a_sorted_top() {
    let mut engine = engine();
    let generation = engine
        .generate_all(greedy("logprobs", 6, Some(5)))
        .await
        .unwrap();
    let log_probs = generation.log_probs.unwrap();
    assert_eq!(log_probs.len(), generation.tokens.len());
    for (entry, &token) in log_probs.iter().zip(&generation.tokens) {
        assert_eq!(entry.token, token);
        assert!(entry.logprob <= 0.0, "{entry:?}");
        assert_eq!(entry.top.len(), 5);
        assert!(entry.top.windows(2).all(|w| w[0].1 >= w[1].1), "{entry:?}");
        let best = entry.top[0].1;
        assert_eq!(entry.logprob, best, "greedy picks the most likely token");
        assert_eq!(entry.top[0].0, token);
        let mass: f32 = entry.top.iter().map(|t| t.1.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
    }
    // Without the option, no log-probabilities travel.
    let plain = engine.generate_all(greedy("plain", 2, None)).await.unwrap();
    assert!(plain.log_probs.is_none());
}
