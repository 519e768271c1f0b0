//! Request validation, error mapping and response shapes, through the router in-process
//! (axum's `oneshot`, no sockets).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::TickingEngine;
use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::GatewayConfig;
use serde_json::{Value, json};
use tower::ServiceExt;

fn echo_app() -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default())
}

async fn post(
    app: axum::Router,
    path: &str,
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn post_json(app: axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, text) = post(app, path, body.to_string()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// The OpenAI error shape, with the status, type and param the gateway promises.
fn assert_error(status: StatusCode, body: &Value, want: u16, kind: &str, param: Option<&str>) {
    assert_eq!(status.as_u16(), want, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
    assert!(error.get("code").is_some(), "{body}");
}

#[tokio::test]
async fn unsupported_values_are_rejected_by_name() {
    let cases = [
        (chat(json!({"n": 17})), "n"),
        (chat(json!({"temperature": 3.5})), "temperature"),
        (chat(json!({"top_p": 0.0})), "top_p"),
        (chat(json!({"top_k": -7})), "top_k"),
        (
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            "top_logprobs",
        ),
        (chat(json!({"top_logprobs": 2})), "top_logprobs"),
        (
            chat(json!({"logprobs": false, "top_logprobs": 2})),
            "top_logprobs",
        ),
        (chat(json!({"max_tokens": 0})), "max_tokens"),
        (
            chat(json!({"max_completion_tokens": 0})),
            "max_completion_tokens",
        ),
        (chat(json!({"stop": ["a", "b", "c", "d", "e"]})), "stop"),
        (chat(json!({"tool_choice": "required"})), "tool_choice"),
        (
            chat(json!({"response_format": {"type": "regex"}})),
            "response_format.type",
        ),
        (chat(json!({"messages": []})), "messages"),
        (
            chat(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            "messages[0].content",
        ),
    ];
    for (body, param) in cases {
        let (status, answer) = post_json(echo_app(), "/v1/chat/completions", body).await;
        assert_error(status, &answer, 400, "invalid_request_error", Some(param));
    }
    for (body, param) in [
        (
            json!({"model": "test", "prompt": "x", "suffix": "y"}),
            "suffix",
        ),
        (
            json!({"model": "test", "prompt": "x", "logprobs": 6}),
            "logprobs",
        ),
        (
            json!({"model": "test", "prompt": "x", "logprobs": 2, "echo": true}),
            "echo",
        ),
    ] {
        let (status, answer) = post_json(echo_app(), "/v1/completions", body).await;
        assert_error(status, &answer, 400, "invalid_request_error", Some(param));
    }
}

#[tokio::test]
async fn malformed_bodies_unknown_models_and_routes_get_openai_errors() {
    let (status, _, text) = post(echo_app(), "/v1/chat/completions", "{not json").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_error(status, &body, 400, "invalid_request_error", None);

    let (status, body) =
        post_json(echo_app(), "/v1/chat/completions", json!({"model": "test"})).await;
    assert_error(status, &body, 400, "invalid_request_error", None);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{body}"
    );

    let (status, body) = post_json(
        echo_app(),
        "/v1/chat/completions",
        chat(json!({"model": "gpt-9"})),
    )
    .await;
    assert_error(status, &body, 404, "not_found_error", Some("model"));
    assert_eq!(body["error"]["code"], "model_not_found");

    let (status, body) = post_json(echo_app(), "/v1/images/generations", json!({})).await;
    assert_error(status, &body, 404, "not_found_error", None);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = common::app(
        BoxEngine::new(EchoEngine::new()),
        GatewayConfig::default().with_body_limit(1024),
    );
    let big = chat(json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]}));
    let (status, body) = post_json(app, "/v1/chat/completions", big).await;
    assert_error(status, &body, 413, "invalid_request_error", None);
}

#[tokio::test]
async fn prompts_longer_than_the_context_are_rejected() {
    let registry = common::registry(BoxEngine::new(EchoEngine::new()));
    let entry = registry.get("test").unwrap();
    registry.insert((*entry).clone().with_context_length(8));
    let app = dynamo_openai::Gateway::new(registry, GatewayConfig::default()).into_router();
    let (status, body) = post_json(
        app,
        "/v1/completions",
        json!({"model": "test", "prompt": "0123456", "max_tokens": 4}),
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        Some("max_tokens"),
    );
}

#[tokio::test]
async fn chat_answers_have_the_openai_shape() {
    let (status, body) = post_json(echo_app(), "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    // The echo engine repeats the rendered prompt: "<|im_start|>user\nHi…" as bytes.
    assert_eq!(choice["message"]["content"], "<|im");
    assert_eq!(choice["finish_reason"], "length");
    let prompt_tokens = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".len();
    assert_eq!(body["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], prompt_tokens + 4);
}

#[tokio::test]
async fn stop_strings_cut_the_answer_and_end_it() {
    let engine = TickingEngine::new("Paris. User: more", Duration::ZERO);
    let app = common::app(BoxEngine::new(engine), GatewayConfig::default());
    let (status, body) = post_json(
        app,
        "/v1/chat/completions",
        chat(json!({"max_tokens": 30, "stop": " User:"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

/// The `data:` payloads of an SSE body.
fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_streams_role_deltas_finish_usage_and_done() {
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, headers, text) = post(echo_app(), "/v1/chat/completions", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "<|im");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn completions_take_every_prompt_form() {
    for (prompt, texts) in [
        (json!("Hello"), vec!["Hel"]),
        (json!(["ab", "cd"]), vec!["ab", "cd"]),
        (json!([72, 105]), vec!["Hi"]),
        (json!([[72], [105, 33]]), vec!["H", "i!"]),
    ] {
        let body = json!({"model": "test", "prompt": prompt, "max_tokens": 3});
        let (status, answer) = post_json(echo_app(), "/v1/completions", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["object"], "text_completion");
        let got: Vec<&str> = answer["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(got, texts, "{answer}");
        for (index, choice) in answer["choices"].as_array().unwrap().iter().enumerate() {
            assert_eq!(choice["index"], index);
        }
    }
    let (status, body) = post_json(
        echo_app(),
        "/v1/completions",
        json!({"model": "test", "prompt": [999999]}),
    )
    .await;
    assert_error(status, &body, 400, "invalid_request_error", Some("prompt"));
}

#[tokio::test]
async fn models_health_metrics_and_openapi_answer() {
    let get = |path: &'static str| async move {
        let response = echo_app()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice::<Value>(&bytes).unwrap_or_default(),
        )
    };
    let (status, models) = get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "test");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(get("/health").await.1["status"], "healthy");
    assert_eq!(get("/live").await.0, StatusCode::OK);
    assert_eq!(get("/ready").await.0, StatusCode::OK);
    // No recorder was given to this gateway.
    assert_eq!(get("/metrics").await.0, StatusCode::NOT_FOUND);
    let (status, document) = get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["paths"]["/v1/completions"]["post"].is_object());

    let empty =
        dynamo_openai::Gateway::new(Default::default(), GatewayConfig::default()).into_router();
    let response = empty
        .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let request = Request::post("/v1/completions")
        .header("x-request-id", "my-id-42")
        .body(Body::from(
            json!({"model": "test", "prompt": "Hi", "max_tokens": 1}).to_string(),
        ))
        .unwrap();
    let response = echo_app().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "my-id-42");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["id"], "cmpl-my-id-42");
    let (_, headers, _) = post(echo_app(), "/v1/nothing", "{}").await;
    assert!(!headers["x-request-id"].is_empty());
}
