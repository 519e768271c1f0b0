//! Shared by the tests and the benches: the real model file, its chat prompt, and the plain
//! single-request candle loop (candle-transformers' `quantized_llama`) we compare against.

#![allow(dead_code, reason = "each test and bench uses a different part")]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use dynamo_openai::{Gateway, GatewayConfig, GgufMetadata, ModelEntry, ModelRegistry};
use tower::ServiceExt;

/// SmolLM2-135M-Instruct's GGUF file, fetched once into the cache.
pub(crate) fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cache = dynamo_assets::cache_dir().expect("a cache directory");
        dynamo_assets::SMOLLM2_135M_INSTRUCT
            .fetch(&cache)
            .expect("the model file")
    })
}

/// The model's tokenizer and chat template, from the same file (the engine is a stand-in).
pub(crate) fn preprocessing() -> &'static ModelEntry {
    static ENTRY: OnceLock<ModelEntry> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let metadata = GgufMetadata::open(model_path()).expect("GGUF metadata");
        let engine = dynamo_core::BoxEngine::new(dynamo_core::EchoEngine::new());
        ModelEntry::from_gguf("smollm2", engine, &metadata).expect("a model entry")
    })
}

/// The gateway over `engine`, as the main job serves it (`n` choices forked from one request,
/// the prompt's log-probabilities whole and streamed).
pub(crate) fn gateway(engine: &dynamo_candle::CandleEngine) -> axum::Router {
    let metadata = GgufMetadata::open(model_path()).expect("GGUF metadata");
    let boxed = dynamo_core::BoxEngine::new(engine.clone());
    let entry = ModelEntry::from_gguf("smollm2", boxed, &metadata)
        .expect("a model entry")
        .with_forking(true)
        .with_prompt_logprobs(true)
        .with_streamed_prompt_logprobs(true);
    let registry = ModelRegistry::default();
    registry.insert(entry);
    Gateway::new(registry, GatewayConfig::default()).into_router()
}

/// `body` posted to `path` of `app`: the answer's status and JSON body.
pub(crate) async fn post_json(
    app: &axum::Router,
    path: &str,
    body: &serde_json::Value,
) -> (axum::http::StatusCode, serde_json::Value) {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body");
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// The token ids of a one-message chat, rendered with the model's template.
pub(crate) fn chat_prompt(question: &str) -> Vec<u32> {
    render(&[serde_json::json!({"role": "user", "content": question})])
}

/// The token ids of `messages`, rendered with the model's template, ready for the answer.
fn render(messages: &[serde_json::Value]) -> Vec<u32> {
    let text = preprocessing()
        .chat_template()
        .expect("a chat template")
        .render(messages, None, true)
        .expect("the template renders");
    preprocessing()
        .tokenizer()
        .encode(&text)
        .expect("the prompt encodes")
}

/// candle-transformers' own model of the file, quantized matrices.
pub(crate) fn plain_candle() -> ModelWeights {
    let mut file = std::fs::File::open(model_path()).expect("the model file opens");
    let content =
        candle_core::quantized::gguf_file::Content::read(&mut file).expect("a GGUF header");
    ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("the model loads")
}

/// The prompt, then `steps` greedy tokens, one request at a time: the plain candle loop.
pub(crate) fn plain_candle_greedy(
    model: &mut ModelWeights,
    prompt: &[u32],
    steps: u32,
) -> Vec<u32> {
    let mut input = prompt.to_vec();
    let mut position = 0;
    let mut out = Vec::new();
    for _ in 0..steps {
        let ids = Tensor::new(input.as_slice(), &Device::Cpu)
            .and_then(|ids| ids.unsqueeze(0))
            .expect("an input tensor");
        let logits = model
            .forward(&ids, position)
            .and_then(|logits| logits.i(0))
            .expect("a forward pass");
        let next = logits
            .argmax(0)
            .and_then(|id| id.to_scalar::<u32>())
            .expect("an argmax");
        position += input.len();
        out.push(next);
        input = vec![next];
    }
    out
}

/// A conversation's first prompt: a system message and a question, rendered with the model's
/// template.
pub(crate) fn system_chat_prompt(system: &str, question: &str) -> Vec<u32> {
    render(&[
        serde_json::json!({"role": "system", "content": system}),
        serde_json::json!({"role": "user", "content": question}),
    ])
}

/// What follows an answer in the conversation's prompt when the user asks `question`: the end
/// of the assistant's turn, the question, and the start of the next answer (SmolLM2's markup).
pub(crate) fn next_turn(question: &str) -> Vec<u32> {
    let text =
        format!("<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
    preprocessing()
        .tokenizer()
        .encode(&text)
        .expect("the turn encodes")
}
