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
