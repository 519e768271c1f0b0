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

/// A text completion's `echo` with `logprobs`, from a model whose engine computes the prompt's
/// log-probabilities: the prompt's tokens first (the first with null log-probabilities: it
/// follows nothing), then the generated ones, offsets running on through both; every choice
/// gets them. Streamed only from an engine that sends them with a stream (in pieces that add up
/// to the whole answer); from an engine that does not compute them, a 400.
#[tokio::test]
async fn echo_with_logprobs_puts_the_prompts_tokens_first() {
    let registry = dynamo_openai::ModelRegistry::default();
    let engine = BoxEngine::new(EchoEngine::new());
    let entry = dynamo_openai::ModelEntry::new("test", engine, dynamo_openai::Tokenizer::bytes())
        .with_prompt_logprobs(true);
    registry.insert(entry);
    let app = dynamo_openai::Gateway::new(registry, GatewayConfig::default()).into_router();
    let request = json!({"model": "test", "prompt": "abc", "max_tokens": 2, "echo": true,
        "logprobs": 1, "n": 2});
    let (status, bytes) = common::post_json(app.clone(), "/v1/completions", &request).await;
    assert_eq!(status, StatusCode::OK);
    let whole: Value = serde_json::from_slice(&bytes).unwrap();
    let half = -std::f64::consts::LN_2;
    for choice in whole["choices"].as_array().unwrap() {
        assert_eq!(choice["text"], "abcab");
        let logprobs = &choice["logprobs"];
        assert_eq!(
            logprobs["tokens"],
            json!(["a", "b", "c", "a", "b"]),
            "{whole}"
        );
        assert_eq!(logprobs["text_offset"], json!([0, 1, 2, 3, 4]));
        let values: Vec<Option<f64>> = logprobs["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::as_f64)
            .collect();
        let expected = [None, Some(half), Some(half), Some(half), Some(half)];
        assert!(
            values.iter().zip(expected).all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                (a, b) => a.is_none() && b.is_none(),
            }),
            "{values:?}"
        );
        assert!(logprobs["top_logprobs"][0].is_null());
        assert_eq!(logprobs["top_logprobs"][1].as_object().unwrap().len(), 1);
    }

    // Streamed from an engine said to send the prompt's scores only with a whole answer: a 400.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, bytes) = common::post_json(app, "/v1/completions", &streamed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["param"], "stream");

    // From one that sends them before its first token (as candle does), each choice's chunks
    // add up to the whole answer's text and log-probabilities: the echo, scored, first.
    let registry = dynamo_openai::ModelRegistry::default();
    let engine = BoxEngine::new(EchoEngine::new());
    let entry = dynamo_openai::ModelEntry::new("test", engine, dynamo_openai::Tokenizer::bytes())
        .with_prompt_logprobs(true)
        .with_streamed_prompt_logprobs(true);
    registry.insert(entry);
    let app = dynamo_openai::Gateway::new(registry, GatewayConfig::default()).into_router();
    let (status, bytes) = common::post_json(app, "/v1/completions", &streamed).await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    let mut added = vec![(String::new(), json!({})); 2];
    let mut first_chunks = Vec::new();
    for data in body.lines().filter_map(|line| line.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        for choice in chunk["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            let (text, logprobs) = &mut added[index];
            if text.is_empty() {
                first_chunks.push(choice["text"].clone());
            }
            text.push_str(choice["text"].as_str().unwrap());
            let Some(fields) = choice["logprobs"].as_object() else {
                continue;
            };
            for (field, values) in fields {
                let all = logprobs
                    .as_object_mut()
                    .unwrap()
                    .entry(field)
                    .or_insert(json!([]));
                all.as_array_mut()
                    .unwrap()
                    .extend(values.as_array().unwrap().iter().cloned());
            }
        }
    }
    assert_eq!(first_chunks, [json!("abc"), json!("abc")], "{body}");
    for (index, (text, logprobs)) in added.iter().enumerate() {
        let whole_choice = &whole["choices"][index];
        assert_eq!(text, whole_choice["text"].as_str().unwrap(), "{body}");
        assert_eq!(logprobs, &whole_choice["logprobs"], "{body}");
    }

    let (status, bytes) = common::post_json(echo_app(), "/v1/completions", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["param"], "echo");
}

/// vLLM's `prompt_logprobs` on chat: one entry per token of the rendered prompt (the chat
/// template's output), the first `null`, each other holding the prompt token's own entry (rank
/// 1 from the echo engine) and the alternatives asked for. Served whole only, and only from an
/// engine that computes them.
#[tokio::test]
async fn chat_prompt_logprobs_score_the_rendered_prompt() {
    let registry = common::registry(BoxEngine::new(EchoEngine::new()));
    let entry = registry.get("test").unwrap().as_ref().clone();
    registry.insert(entry.with_prompt_logprobs(true));
    let app = dynamo_openai::Gateway::new(registry, GatewayConfig::default()).into_router();
    let request = json!({"model": "test", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2, "prompt_logprobs": 2});
    let (status, bytes) = common::post_json(app.clone(), "/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK);
    let whole: Value = serde_json::from_slice(&bytes).unwrap();
    let entries = whole["prompt_logprobs"].as_array().unwrap();
    assert_eq!(
        entries.len() as u64,
        whole["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(entries[0].is_null());
    // The byte tokenizer: the rendered prompt is `<|im_start|>user\nhi<|im_end|>...`.
    let rendered = "<|im_start|>user\nhi";
    for (k, byte) in rendered.bytes().enumerate().skip(1) {
        let entry = entries[k].as_object().unwrap();
        let own = &entry[&byte.to_string()];
        assert_eq!(
            own["decoded_token"],
            (byte as char).to_string(),
            "token {k}"
        );
        assert_eq!(own["rank"], 1);
        assert!(
            entry.len() <= 2,
            "the token and one other alternative: {entry:?}"
        );
    }

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, bytes) = common::post_json(app, "/v1/chat/completions", &streamed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["param"], "stream");

    let (status, bytes) = common::post_json(echo_app(), "/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["param"], "prompt_logprobs");
}
