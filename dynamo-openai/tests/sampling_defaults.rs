//! A model's recommended sampling settings reach the engine for the fields a request leaves
//! out, and never override the fields it gives.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::http::StatusCode;
use common::{CHATML, RecordingEngine};
use dynamo_core::{BoxEngine, SamplingOptions};
use dynamo_openai::{
    ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, SamplingDefaults, Tokenizer,
};
use serde_json::{Value, json};

/// A gateway serving `test` with `defaults`, and the engine behind it.
fn gateway(defaults: SamplingDefaults) -> (axum::Router, RecordingEngine) {
    let engine = RecordingEngine::default();
    let registry = ModelRegistry::default();
    let entry = ModelEntry::new("test", BoxEngine::new(engine.clone()), Tokenizer::bytes())
        .with_chat_template(ChatTemplate::new(CHATML).unwrap())
        .with_sampling_defaults(defaults);
    registry.insert(entry);
    let app = Gateway::new(registry, GatewayConfig::default()).into_router();
    (app, engine)
}

const RECOMMENDED: SamplingDefaults = SamplingDefaults {
    temperature: Some(0.2),
    top_p: Some(0.9),
    top_k: None,
};

/// The sampling options the engine saw for `body` sent to `path`.
async fn sampling(defaults: SamplingDefaults, path: &str, body: Value) -> SamplingOptions {
    let (app, engine) = gateway(defaults);
    let (status, bytes) = common::post_json(app, path, &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let requests = engine.requests();
    assert_eq!(requests.len(), 1);
    requests[0].sampling.clone()
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn completion(extra: Value) -> Value {
    let mut body = json!({"model": "test", "prompt": "Hi", "max_tokens": 2});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn requests_without_sampling_fields_get_the_model_defaults() {
    for (path, body) in [
        ("/v1/chat/completions", chat(json!({}))),
        ("/v1/completions", completion(json!({}))),
        // `null` counts as not given.
        ("/v1/chat/completions", chat(json!({"temperature": null}))),
    ] {
        let options = sampling(RECOMMENDED, path, body).await;
        assert_eq!(options.temperature, Some(0.2), "{path}");
        assert_eq!(options.top_p, Some(0.9), "{path}");
        assert_eq!(options.top_k, None, "{path}");
    }
}

#[tokio::test]
async fn fields_a_request_gives_are_kept() {
    for (path, body) in [
        ("/v1/chat/completions", chat(json!({"temperature": 0.7}))),
        ("/v1/completions", completion(json!({"temperature": 0.7}))),
    ] {
        let options = sampling(RECOMMENDED, path, body).await;
        assert_eq!(options.temperature, Some(0.7), "{path}");
        // The field it left out still gets the default.
        assert_eq!(options.top_p, Some(0.9), "{path}");
    }
    // Greedy decoding is a value like any other.
    let options = sampling(
        RECOMMENDED,
        "/v1/completions",
        completion(json!({"temperature": 0, "top_p": 1.0})),
    )
    .await;
    assert_eq!(options.temperature, Some(0.0));
    assert_eq!(options.top_p, Some(1.0));
}

#[tokio::test]
async fn top_k_defaults_and_a_request_can_turn_it_off() {
    let defaults = SamplingDefaults {
        top_k: Some(20),
        ..SamplingDefaults::default()
    };
    let options = sampling(defaults, "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(options.top_k, Some(20));
    assert_eq!(options.temperature, None);
    let options = sampling(defaults, "/v1/chat/completions", chat(json!({"top_k": -1}))).await;
    assert_eq!(options.top_k, None);
    let options = sampling(defaults, "/v1/completions", completion(json!({"top_k": 5}))).await;
    assert_eq!(options.top_k, Some(5));
}

#[tokio::test]
async fn no_defaults_change_nothing() {
    let options = sampling(
        SamplingDefaults::default(),
        "/v1/chat/completions",
        chat(json!({})),
    )
    .await;
    assert_eq!(options, SamplingOptions::default());
}
