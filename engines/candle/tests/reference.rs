//! Our forward pass against candle-transformers' own quantized llama on the same file, both
//! with quantized matrices: the greedy continuation of the chat prompt must be the same.

mod support;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_tokens_match_candle_transformers() {
    let prompt = support::chat_prompt("What is the capital of France?");
    let steps = 10;
    let expected = support::plain_candle_greedy(&mut support::plain_candle(), &prompt, steps);

    let weights =
        LlamaWeights::load_quantized(support::model_path(), &candle_core::Device::Cpu).unwrap();
    let mut engine = CandleEngine::start(weights, CandleConfig::default(), None).unwrap();
    let mut request = GenerateRequest::new("r", "smollm2", prompt).with_max_tokens(steps);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = true;
    let ours = engine.generate_all(request).await.unwrap().tokens;
    assert_eq!(ours, expected);
}

/// Attention across rayon's pool and on the model thread alone compute each row's and head's
/// scores in the same order: the same tokens and the same log-probabilities, bit for bit, for
/// three sequences at once, of 380 to 420 prompt tokens in chunks of 64 rows (enough work for
/// every step to go across the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attention_across_the_pool_is_the_model_threads_bit_for_bit() {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    let mut answers = Vec::new();
    for parallel in [true, false] {
        let config = CandleConfig {
            parallel_attention: parallel,
            max_step_tokens: 64,
            ..CandleConfig::default()
        };
        let engine = CandleEngine::start(weights.clone(), config, None).unwrap();
        let questions = [
            "What is the capital of France?",
            "Name a colour.",
            "Count to three.",
        ];
        let runs = questions.iter().enumerate().map(|(index, question)| {
            let mut engine = engine.clone();
            let chat = support::chat_prompt(question);
            let prompt: Vec<u32> = chat
                .iter()
                .copied()
                .cycle()
                .take(380 + 20 * index)
                .collect();
            let mut request =
                GenerateRequest::new(format!("r{index}"), "smollm2", prompt).with_max_tokens(8);
            request.sampling.temperature = Some(0.0);
            request.sampling.logprobs = Some(3);
            request.stop.ignore_eos = true;
            async move { engine.generate_all(request).await.unwrap() }
        });
        let generations = futures::future::join_all(runs).await;
        answers.push(
            generations
                .into_iter()
                .map(|generation| (generation.tokens, generation.log_probs))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(answers[0], answers[1]);
}
