//! The generic adapter against an engine nobody here wrote: llama.cpp's HTTP server, from the
//! prebuilt CPU wheel of the PyPI package `xllamacpp` (which CI installs in its virtual
//! environment), serving the SmolLM2 GGUF file the other tests use, started here on a free
//! loopback port (`tests/support/llama_server.rs`, shared with `dynamo-serve`'s test of a
//! frontend in front of it).
//!
//! Python is found at `DYNAMO_LLAMA_PYTHON`, else in CI's virtual environment
//! (`~/.cache/dynamo-ci/venv/bin/python`). Without `xllamacpp` there the test fails and says how
//! to install it. Run with `cargo test -p dynamo-upstream --features llama-cpp --test llama_cpp`.

#![cfg(feature = "llama-cpp")]

#[path = "support/llama_server.rs"]
mod llama_server;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_core::{Delivery, EngineExt, GenerateRequest, OutputFormat, SamplingOptions};
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, FormatField, HttpClient, HttpConfig, LoadMetrics,
    MetricsPoller, read_body,
};
use futures::StreamExt;

/// `DYNAMO_LLAMA_PYTHON`, else CI's virtual environment.
fn python() -> PathBuf {
    llama_server::python_from_env().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is set");
        PathBuf::from(home).join(".cache/dynamo-ci/venv/bin/python")
    })
}

/// The server's own tokenization of `text` (`POST /tokenize`).
async fn tokenize(client: &HttpClient, text: &str) -> Vec<u32> {
    let body = serde_json::json!({ "content": text }).to_string();
    let response = client
        .post_json("/tokenize", Bytes::from(body))
        .await
        .expect("an answer");
    let bytes = read_body(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    let answer: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    serde_json::from_value(answer["tokens"].clone()).expect("token ids")
}

fn greedy(tokens: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new("r", "smollm2", tokens)
        .with_max_tokens(max_tokens)
        .with_sampling(SamplingOptions {
            temperature: Some(0.0),
            ..Default::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_adapter_serves_llama_cpp() {
    let server = tokio::task::spawn_blocking(|| llama_server::start(&python()))
        .await
        .expect("started");
    let client = HttpClient::new(&server.url, HttpConfig::default()).expect("a URL");
    let mut engine = CompletionsEngine::new(client.clone(), Dialect::openai());
    let prompt = tokenize(&client, "The capital of France is").await;

    // Token ids in, llama.cpp's text and usage out.
    let first = engine
        .generate_all(greedy(prompt.clone(), 4))
        .await
        .expect("an answer");
    let text = first.text.clone().unwrap_or_default();
    assert!(text.contains("Paris"), "{text:?}");
    let usage = first.usage.expect("usage");
    assert_eq!(usage.prompt_tokens as usize, prompt.len());
    assert_eq!(usage.completion_tokens, 4);

    // A stream dropped mid-answer leaves the server answering the next request the same, and
    // the repeated prompt comes from its cache.
    let mut stream = engine
        .generate(greedy(prompt.clone(), 64))
        .await
        .expect("a stream");
    assert!(stream.next().await.expect("a chunk").is_ok());
    drop(stream);
    let again = engine
        .generate_all(greedy(prompt.clone(), 4))
        .await
        .expect("an answer");
    assert_eq!(again.text, first.text);
    assert!(again.usage.expect("usage").cached_tokens > 0);

    // Read whole, the same answer comes from one non-streamed call, in one chunk.
    let mut request = greedy(prompt.clone(), 4);
    request.delivery = Delivery::Whole;
    let mut stream = engine.generate(request).await.expect("a stream");
    let chunk = stream.next().await.expect("a chunk").expect("the answer");
    assert!(stream.next().await.is_none(), "one chunk");
    assert_eq!(chunk.text, first.text);
    assert!(chunk.finish_reason.is_some());
    let usage = chunk.usage.expect("usage");
    assert_eq!(usage.completion_tokens, 4);
    assert_eq!(usage.prompt_tokens as usize, prompt.len());

    // Its load, from its Prometheus metrics (`--metrics`).
    let metrics = LoadMetrics {
        running: vec!["llamacpp:requests_processing".into()],
        waiting: vec!["llamacpp:requests_deferred".into()],
        kv_usage: vec![],
        kv_usage_scale: 1.0,
        kv_capacity: vec![],
        series: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = loop {
        match MetricsPoller::new(client.clone(), metrics.clone())
            .scrape()
            .await
        {
            Ok(load) => break load,
            Err(error) if Instant::now() > deadline => panic!("no load: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(load.waiting_requests, 0.0);
    assert!(load.running_requests <= 1.0, "{load:?}");

    // An output format: sent as the `json_schema` field llama.cpp's server reads on
    // `/v1/completions` (it ignores `response_format` there), and enforced by its grammar:
    // the answers are JSON, an object, and the schema's.
    let dialect = Dialect::openai().extensions(Extensions {
        response_format: FormatField::JsonSchemaField,
        ..Extensions::default()
    });
    let mut formatted = CompletionsEngine::new(client.clone(), dialect);
    let mut request = greedy(prompt.clone(), 48);
    request.format = Some(OutputFormat::JsonObject);
    let answer = formatted.generate_all(request).await.expect("an answer");
    let text = answer.text.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
    assert!(value.is_object(), "{text:?}");
    let mut request = greedy(prompt.clone(), 48);
    request.format = Some(OutputFormat::JsonSchema {
        schema: r#"{"type": "object", "properties": {"capital": {"type": "string", "maxLength": 12}}, "required": ["capital"], "additionalProperties": false}"#.into(),
    });
    let answer = formatted.generate_all(request).await.expect("an answer");
    let text = answer.text.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
    assert!(value["capital"].is_string(), "{text:?}");
    // The plain dialect refuses a format: OpenAI's `/v1/completions` has none.
    let mut request = greedy(prompt, 4);
    request.format = Some(OutputFormat::JsonObject);
    let error = engine.generate_all(request).await.expect_err("refused");
    assert!(error.to_string().contains("response_format"), "{error}");
}
