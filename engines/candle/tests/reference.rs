//! Our forward pass against candle-transformers' own quantized llama on the same file, both
//! with quantized matrices: the greedy continuation of the chat prompt must be the same.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_tokens_match_candle_transformers() {
    let cache = dynamo_assets::cache_dir().unwrap();
    let path = dynamo_assets::SMOLLM2_135M_INSTRUCT.fetch(&cache).unwrap();
    let metadata = dynamo_openai::GgufMetadata::open(&path).unwrap();
    let entry = dynamo_openai::ModelEntry::from_gguf(
        "smollm2",
        dynamo_core::BoxEngine::new(dynamo_core::EchoEngine::new()),
        &metadata,
    )
    .unwrap();
    let messages =
        [serde_json::json!({"role": "user", "content": "What is the capital of France?"})];
    let text = entry
        .chat_template()
        .unwrap()
        .render(&messages, None, true)
        .unwrap();
    let prompt = entry.tokenizer().encode(&text).unwrap();
    let steps = 10;

    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let mut expected = Vec::new();
    let mut input = prompt.clone();
    let mut position = 0;
    for _ in 0..steps {
        let ids = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = reference.forward(&ids, position).unwrap().i(0).unwrap();
        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        position += input.len();
        expected.push(next);
        input = vec![next];
    }

    let weights = LlamaWeights::load_quantized(&path, &Device::Cpu).unwrap();
    let mut engine = CandleEngine::start(weights, CandleConfig::default(), None).unwrap();
    let mut request = GenerateRequest::new("r", "smollm2", prompt).with_max_tokens(steps as u32);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = true;
    let ours = engine.generate_all(request).await.unwrap().tokens;
    assert_eq!(ours, expected);
}
