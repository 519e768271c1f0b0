//! Snapshots (insta) of the JSON the gateway answers with: whole responses, stream chunks and
//! error bodies, so that a change of shape shows up in review. Ids and timestamps are redacted.
//!
//! After an intended change: `INSTA_UPDATE=always cargo test -p dynamo-openai --test json_shapes`
//! (or `cargo insta review`), then read the diff of `tests/snapshots/`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{CHATML, TickingEngine};
use dynamo_core::{BoxEngine, EchoEngine, FinishReason};
use dynamo_openai::{
    ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, ReasoningFormat, Tokenizer,
    ToolCallFormat,
};
use serde_json::{Value, json};
use tower::ServiceExt;

/// insta's `assert_json_snapshot!` with map keys sorted, so that a snapshot does not depend on
/// whether serde_json keeps insertion order (its `preserve_order` feature, which a dependency
/// elsewhere in the workspace turns on in workspace-wide builds).
macro_rules! assert_json_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!($($arg)*) })
    };
}

/// A model `test` that answers with `answer` (byte tokens), parsing tool calls and reasoning.
fn answering(answer: &'static str) -> axum::Router {
    let registry = ModelRegistry::default();
    let engine = BoxEngine::new(TickingEngine::new(answer, Duration::ZERO));
    let entry = ModelEntry::new("test", engine, Tokenizer::bytes())
        .with_chat_template(ChatTemplate::new(CHATML).unwrap())
        .with_tool_calls(ToolCallFormat::Hermes)
        .with_reasoning(ReasoningFormat::Think);
    registry.insert(entry);
    Gateway::new(registry, GatewayConfig::default()).into_router()
}

fn echo() -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default())
}

async fn send(app: axum::Router, request: Request<Body>) -> String {
    let response = app.oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn post(app: axum::Router, path: &str, body: Value) -> String {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, request).await
}

/// A non-streamed answer as JSON.
async fn answer(app: axum::Router, path: &str, body: Value) -> Value {
    serde_json::from_str(&post(app, path, body).await).unwrap()
}

/// A streamed answer: every `data:` payload, JSON where it parses (`[DONE]` stays a string).
async fn stream(app: axum::Router, path: &str, body: Value) -> Vec<Value> {
    post(app, path, body)
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::from(data)))
        .collect()
}

fn chat(content: &str, max_tokens: usize) -> Value {
    json!({"model": "test", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
}

/// A chat request offering the `weather` tool.
fn chat_with_tools() -> Value {
    let mut request = chat("Weather in Paris?", TOOL_ANSWER.len());
    request["tools"] = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    request
}

const TOOL_ANSWER: &str = r#"<think>The user wants weather.</think>Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>"#;

#[tokio::test]
async fn chat_completion() {
    let body = answer(echo(), "/v1/chat/completions", chat("Hi", 4)).await;
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

#[tokio::test]
async fn chat_completion_with_reasoning_and_a_tool_call() {
    let request = chat_with_tools();
    let body = answer(answering(TOOL_ANSWER), "/v1/chat/completions", request).await;
    assert_json_snapshot!(body, {
        ".id" => "[id]",
        ".created" => "[created]",
        ".choices[].message.tool_calls[].id" => "[call id]",
    });
}

#[tokio::test]
async fn chat_stream_chunks() {
    let mut request = chat("Hi", 3);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let chunks = stream(echo(), "/v1/chat/completions", request).await;
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn chat_stream_chunks_with_reasoning_and_a_tool_call() {
    let mut request = chat_with_tools();
    request["stream"] = json!(true);
    let chunks = stream(answering(TOOL_ANSWER), "/v1/chat/completions", request).await;
    // Byte tokens make one chunk per character; keep the chunks that are not plain text.
    let shaped: Vec<&Value> = chunks
        .iter()
        .filter(|chunk| {
            let delta = &chunk["choices"][0]["delta"];
            !(delta.as_object().is_some_and(|d| d.len() == 1)
                && (delta.get("content").is_some() || delta.get("reasoning_content").is_some()))
        })
        .collect();
    assert_json_snapshot!(shaped, {
        "[].id" => "[id]",
        "[].created" => "[created]",
        "[].choices[].delta.tool_calls[].id" => "[call id]",
    });
}

#[tokio::test]
async fn completion_with_two_prompts() {
    let request = json!({"model": "test", "prompt": ["ab", "cd"], "max_tokens": 2});
    let body = answer(echo(), "/v1/completions", request).await;
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

#[tokio::test]
async fn completion_stream_chunks() {
    let request = json!({"model": "test", "prompt": "Hey", "max_tokens": 2, "stream": true,
        "stream_options": {"include_usage": true}});
    let chunks = stream(echo(), "/v1/completions", request).await;
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn chat_completion_with_logprobs() {
    let mut request = chat("Hé", 3);
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(2);
    let body = answer(echo(), "/v1/chat/completions", request).await;
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

#[tokio::test]
async fn chat_stream_chunks_with_logprobs() {
    let mut request = chat("Hé", 3);
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(1);
    request["stream"] = json!(true);
    let chunks = stream(echo(), "/v1/chat/completions", request).await;
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn completion_with_logprobs() {
    let request = json!({"model": "test", "prompt": "Hé!", "max_tokens": 4, "logprobs": 2});
    let body = answer(echo(), "/v1/completions", request).await;
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

#[tokio::test]
async fn completion_stream_chunks_with_logprobs() {
    let request = json!({"model": "test", "prompt": "Hé", "max_tokens": 3, "logprobs": 1,
        "stream": true});
    let chunks = stream(echo(), "/v1/completions", request).await;
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn error_bodies() {
    let mut refused = chat("Hi", 4);
    refused["n"] = json!(17);
    let unknown_model = json!({"model": "nope", "prompt": "Hi"});
    let errors = json!({
        "unsupported_value": answer(echo(), "/v1/chat/completions", refused).await,
        "unknown_model": answer(echo(), "/v1/completions", unknown_model).await,
        "malformed_json": serde_json::from_str::<Value>(
            &send(echo(), Request::post("/v1/completions")
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap()).await,
        ).unwrap(),
    });
    assert_json_snapshot!(errors);
}

#[tokio::test]
async fn models_list() {
    let text = send(
        echo(),
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_json_snapshot!(body, {".data[].created" => "[created]"});
}

/// A chat request forcing a call of the `weather` tool.
fn chat_forcing_a_call() -> Value {
    let mut request = chat_with_tools();
    request["tool_choice"] = json!({"type": "function", "function": {"name": "weather"}});
    request
}

/// A model `test` whose engine writes what a forced call's format holds it to (the arguments
/// alone, byte tokens), then stops as an engine does once the format is complete.
fn forced_arguments() -> axum::Router {
    writing_under_a_format(r#"{"city":"Paris"}"#, FinishReason::Stop)
}

/// A model `test` whose engine, asked for a format, writes `text` (byte tokens) and finishes
/// with `reason`.
fn writing_under_a_format(text: &'static str, reason: FinishReason) -> axum::Router {
    let engine = common::writing(text, reason, |request| {
        assert!(request.format.is_some(), "the format reaches the engine");
    });
    common::app(engine, GatewayConfig::default())
}

#[tokio::test]
async fn chat_completion_with_a_forced_tool_call() {
    let body = answer(
        forced_arguments(),
        "/v1/chat/completions",
        chat_forcing_a_call(),
    )
    .await;
    assert_json_snapshot!(body, {
        ".id" => "[id]",
        ".created" => "[created]",
        ".choices[].message.tool_calls[].id" => "[call id]",
    });
}

#[tokio::test]
async fn chat_stream_chunks_with_a_forced_tool_call() {
    let mut request = chat_forcing_a_call();
    request["stream"] = json!(true);
    let chunks = stream(forced_arguments(), "/v1/chat/completions", request).await;
    assert_json_snapshot!(chunks, {
        "[].id" => "[id]",
        "[].created" => "[created]",
        "[].choices[].delta.tool_calls[].id" => "[call id]",
    });
}

/// `tool_choice: "required"`: the array of calls the format holds the answer to becomes the
/// message's `tool_calls`, arguments as JSON text; cut short by the length limit, a call whose
/// name was whole comes back with the arguments so far, text before that as it came, with
/// `finish_reason: "length"`.
#[tokio::test]
async fn chat_completion_with_required_tool_calls() {
    let calls = r#"[{"name":"weather","arguments":{"city":"Paris"}},{"name":"weather","arguments":{"city":"Lyon"}}]"#;
    let mut request = chat_with_tools();
    request["tool_choice"] = json!("required");
    let whole = answer(
        writing_under_a_format(calls, FinishReason::Stop),
        "/v1/chat/completions",
        request.clone(),
    )
    .await;
    let cut = answer(
        writing_under_a_format(
            r#"[{"name":"weather","arguments":{"ci"#,
            FinishReason::Length,
        ),
        "/v1/chat/completions",
        request.clone(),
    )
    .await;
    let cut_before_a_name = answer(
        writing_under_a_format(r#"[{"name":"wea"#, FinishReason::Length),
        "/v1/chat/completions",
        request,
    )
    .await;
    assert_json_snapshot!(json!({"whole": whole, "cut_short": cut, "cut_before_a_name": cut_before_a_name}), {
        ".*.id" => "[id]",
        ".*.created" => "[created]",
        ".*.choices[].message.tool_calls[].id" => "[call id]",
    });
}
