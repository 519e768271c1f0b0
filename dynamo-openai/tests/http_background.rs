//! Background responses (`background: true` on `/v1/responses`) as a client polls them: answered
//! at once `in_progress`, stored when done, cancelled (their generation stopped) through the
//! gateway that runs them or through another sharing its store, and refused with a 400 naming
//! `background` where they cannot be kept.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{TickingEngine, send};
use dynamo_core::{BoxEngine, FinishReason};
use dynamo_openai::object_store::ObjectStore;
use dynamo_openai::object_store::memory::InMemory;
use dynamo_openai::{Gateway, GatewayConfig};
use serde_json::{Value, json};

/// POST `body` to `/v1/responses` of `app`.
async fn respond(app: &axum::Router, body: &Value) -> (StatusCode, Value) {
    send(app.clone(), "POST", "/v1/responses", None, Some(body)).await
}

/// The response `id` as `app` returns it.
async fn get(app: &axum::Router, id: &Value) -> Value {
    let path = format!("/v1/responses/{}", id.as_str().expect("an id"));
    let (status, response) = send(app.clone(), "GET", &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    response
}

/// `POST /v1/responses/{id}/cancel` of `app`.
async fn cancel(app: &axum::Router, id: &str) -> (StatusCode, Value) {
    let path = format!("/v1/responses/{id}/cancel");
    send(app.clone(), "POST", &path, None, None).await
}

/// Wait (up to a minute) until `check` holds. The tests run on a paused clock, so the pauses
/// between checks are the runtime's own idle time, never wall-clock time.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request for a background response of at most `tokens` tokens.
fn in_background(tokens: u32) -> Value {
    json!({"model": "test", "input": "Capital of France?", "background": true,
        "max_output_tokens": tokens})
}

#[tokio::test(start_paused = true)]
async fn a_background_response_is_answered_at_once_and_stored_when_done() {
    let engine = common::writing("Paris.", FinishReason::Stop, |_| {});
    let app = common::app(engine, GatewayConfig::default());
    let (status, started) = respond(&app, &in_background(16)).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["status"], "in_progress");
    assert_eq!(started["background"], true);
    assert_eq!(started["output"], json!([]));

    until("the response is done", async || {
        get(&app, &started["id"]).await["status"] == "completed"
    })
    .await;
    let done = get(&app, &started["id"]).await;
    assert_eq!(done["output"][0]["content"][0]["text"], "Paris.", "{done}");
    assert_eq!(done["usage"]["output_tokens"], 6);
    // Done, it is continued from as any stored response, and cancelling it changes nothing.
    let follow =
        json!({"model": "test", "input": "And Italy?", "previous_response_id": started["id"]});
    let (status, next) = respond(&app, &follow).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let (status, unchanged) = cancel(&app, started["id"].as_str().unwrap_or_default()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unchanged, done);
    // Only background responses are cancelled.
    let (status, error) = cancel(&app, next["id"].as_str().unwrap_or_default()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = cancel(&app, "resp_nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_the_generation_and_is_what_is_stored() {
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(5));
    let app = common::app(BoxEngine::new(engine.clone()), GatewayConfig::default());
    let (_, started) = respond(&app, &in_background(100_000)).await;
    let id = started["id"].as_str().unwrap_or_default();
    // Still running: not a conversation to continue yet.
    let follow = json!({"model": "test", "input": "More", "previous_response_id": id});
    let (status, error) = respond(&app, &follow).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");

    let (status, cancelled) = cancel(&app, id).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    until("the engine sees the cancel", async || {
        engine.cancelled() == 1
    })
    .await;
    assert_eq!(get(&app, &started["id"]).await["status"], "cancelled");
    let (_, again) = cancel(&app, id).await;
    assert_eq!(again["status"], "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_through_another_gateway_reaches_the_runner_at_its_next_beat() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(5));
    let gateway = |engine: BoxEngine| {
        Gateway::new(common::registry(engine), GatewayConfig::default())
            .with_shared_responses(store.clone(), "responses".into())
            .into_router()
    };
    let runner = gateway(BoxEngine::new(engine.clone()));
    let other = gateway(common::writing("", FinishReason::Stop, |_| {}));
    let (_, started) = respond(&runner, &in_background(1_000_000)).await;
    assert_eq!(get(&other, &started["id"]).await["status"], "in_progress");

    let (status, cancelled) = cancel(&other, started["id"].as_str().unwrap_or_default()).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    until("the runner stops the engine", async || {
        engine.cancelled() == 1
    })
    .await;
    assert_eq!(get(&runner, &started["id"]).await["status"], "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_draining_server_waits_for_its_background_responses() {
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(2));
    let gateway = Gateway::new(
        common::registry(BoxEngine::new(engine)),
        GatewayConfig::default(),
    );
    let background = gateway.background_responses();
    let app = gateway.into_router();
    let (_, started) = respond(&app, &in_background(50)).await;
    assert_eq!(background.running(), 1);
    // What `dynamo-serve` does once its connections are closed.
    background.finished().await;
    assert_eq!(background.running(), 0);
    let done = get(&app, &started["id"]).await;
    assert_eq!(done["status"], "incomplete", "{done}");
    assert_eq!(done["usage"]["output_tokens"], 50);
}

#[tokio::test(start_paused = true)]
async fn a_background_response_needs_the_store_and_is_not_streamed() {
    let engine = || common::writing("Paris.", FinishReason::Stop, |_| {});
    let app = common::app(engine(), GatewayConfig::default());
    for (field, value) in [("stream", json!(true)), ("store", json!(false))] {
        let mut request = in_background(4);
        request[field] = value;
        let (status, error) = respond(&app, &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(error["error"]["param"], "background", "{error}");
    }
    let off = common::app(
        engine(),
        GatewayConfig::default().with_response_store_bytes(0),
    );
    let (status, error) = respond(&off, &in_background(4)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "background", "{error}");
}
