//! Shared pieces of the Responses API's tests: a model whose engine writes a given answer, and
//! calls to `/v1/responses` and its stored responses.

use std::sync::Arc;

use axum::http::StatusCode;
use dynamo_core::{FinishReason, GenerateRequest};
use dynamo_openai::{
    ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, ReasoningFormat, Tokenizer,
    ToolCallFormat,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A model `test` (byte tokens, ChatML, Hermes tool calls, `<think>` reasoning) whose engine
/// writes `text` and finishes with `reason`; the requests it was given.
pub(crate) fn writing(
    text: &'static str,
    reason: FinishReason,
) -> (axum::Router, Arc<Mutex<Vec<GenerateRequest>>>) {
    writing_with(text, reason, GatewayConfig::default())
}

/// [`writing`], behind a gateway of `config`.
pub(crate) fn writing_with(
    text: &'static str,
    reason: FinishReason,
    config: GatewayConfig,
) -> (axum::Router, Arc<Mutex<Vec<GenerateRequest>>>) {
    let (registry, requests) = registry_writing(text, reason);
    (Gateway::new(registry, config).into_router(), requests)
}

/// The registry of [`writing`]'s model, and the requests its engine is given.
pub(crate) fn registry_writing(
    text: &'static str,
    reason: FinishReason,
) -> (ModelRegistry, Arc<Mutex<Vec<GenerateRequest>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let engine = super::writing(text, reason, move |request| {
        seen.lock().push(request.clone());
    });
    let registry = ModelRegistry::default();
    let entry = ModelEntry::new("test", engine, Tokenizer::bytes())
        .with_chat_template(ChatTemplate::new(super::CHATML).expect("the test template compiles"))
        .with_tool_calls(ToolCallFormat::Hermes)
        .with_reasoning(ReasoningFormat::Think);
    registry.insert(entry);
    (registry, requests)
}

/// POST `body` to `/v1/responses` of `app`: the status and the body as JSON (a stream's events
/// as a list).
pub(crate) async fn respond(app: axum::Router, body: &Value) -> (StatusCode, Value) {
    let (status, bytes) = super::post_json(app, "/v1/responses", body).await;
    let text = String::from_utf8(bytes.to_vec()).expect("a UTF-8 body");
    if body["stream"] == true {
        let events = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).expect("a JSON event"))
            .collect();
        return (status, Value::Array(events));
    }
    (status, serde_json::from_str(&text).expect("a JSON body"))
}

/// A request offering the `weather` function.
pub(crate) fn asking_for_weather() -> Value {
    json!({"model": "test", "input": "Weather in Paris?", "tools": [{"type": "function", "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]})
}

pub(crate) const HERMES_ANSWER: &str =
    r#"Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>"#;

/// The prompt the engine was given, as text (byte tokens).
pub(crate) fn prompt_of(request: &GenerateRequest) -> String {
    let bytes: Vec<u8> = request.tokens.iter().map(|&token| token as u8).collect();
    String::from_utf8(bytes).expect("a UTF-8 prompt")
}

/// `method` `path` of `app` with no body, as the caller with `key` (if any): the status and
/// the body as JSON.
pub(crate) async fn call(
    app: axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, Value) {
    super::send(app, method, path, key, None).await
}
