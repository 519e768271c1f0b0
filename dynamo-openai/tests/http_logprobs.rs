//! Log-probabilities through the gateway over the echo engine (synthetic values): one entry per
//! answered token, stop tokens left out, the same whole and streamed, and the tokens spelling
//! the text.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::GatewayConfig;
use serde_json::{Value, json};
use tower::ServiceExt;

fn echo_app() -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default())
}

async fn post(path: &str, body: Value) -> String {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = echo_app().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The JSON chunks of a stream.
async fn chunks(path: &str, body: Value) -> Vec<Value> {
    post(path, body)
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

fn tokens_of(content: &Value) -> Vec<String> {
    content
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["token"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn chat_logprobs_spell_the_answer_whole_and_streamed() {
    // The echo engine answers with the rendered prompt; `|` (124) is a stop token.
    let request = json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 12, "logprobs": true, "top_logprobs": 3, "stop_token_ids": [124]});
    let whole: Value =
        serde_json::from_str(&post("/v1/chat/completions", request.clone()).await).unwrap();
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["content"], "<", "{whole}");
    let content = &choice["logprobs"]["content"];
    assert_eq!(tokens_of(content), ["<"], "the stop token has no entry");
    for entry in content.as_array().unwrap() {
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["logprob"], entry["logprob"]);
    }

    let mut request = request;
    request["stop_token_ids"] = json!([]);
    request["stream"] = json!(true);
    let streamed = chunks("/v1/chat/completions", request.clone()).await;
    let mut text = String::new();
    let mut tokens = Vec::new();
    for chunk in &streamed {
        let choice = &chunk["choices"][0];
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        if !choice["logprobs"].is_null() {
            tokens.extend(tokens_of(&choice["logprobs"]["content"]));
        }
    }
    assert_eq!(tokens.len(), 12);
    assert_eq!(tokens.concat(), text);
    request["stream"] = json!(false);
    let whole: Value = serde_json::from_str(&post("/v1/chat/completions", request).await).unwrap();
    assert_eq!(
        tokens_of(&whole["choices"][0]["logprobs"]["content"]),
        tokens
    );
}

#[tokio::test]
async fn completion_logprobs_are_parallel_lists_with_offsets() {
    let request = json!({"model": "test", "prompt": ["abc", "xy"], "max_tokens": 3,
        "logprobs": 0});
    let whole: Value = serde_json::from_str(&post("/v1/completions", request).await).unwrap();
    let first = &whole["choices"][0]["logprobs"];
    assert_eq!(first["tokens"], json!(["a", "b", "c"]), "{whole}");
    assert_eq!(first["text_offset"], json!([0, 1, 2]));
    assert_eq!(first["top_logprobs"], json!([{}, {}, {}]));
    assert_eq!(first["token_logprobs"].as_array().unwrap().len(), 3);
    assert_eq!(whole["choices"][1]["logprobs"]["tokens"], json!(["x", "y"]));

    // Without the option, `logprobs` is null.
    let request = json!({"model": "test", "prompt": "abc", "max_tokens": 2});
    let whole: Value = serde_json::from_str(&post("/v1/completions", request).await).unwrap();
    assert!(whole["choices"][0]["logprobs"].is_null());
}
