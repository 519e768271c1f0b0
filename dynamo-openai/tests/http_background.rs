//! Background responses (`background: true` on `/v1/responses`) as a client polls them: answered
//! at once `in_progress`, stored when done, cancelled (their generation stopped) through the
//! gateway that runs them or through another sharing its store, and refused with a 400 naming
//! `background` where they cannot be kept. Streamed ones (`stream: true`) as a client follows
//! them: again from any event with `GET …?stream=true&starting_after=N`, after its stream broke
//! while the generation went on, through another gateway sharing the store while they run, and
//! to their cancel.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{TickingEngine, exchange, send};
use dynamo_core::{BoxEngine, FinishReason};
use dynamo_openai::object_store::ObjectStore;
use dynamo_openai::object_store::memory::InMemory;
use dynamo_openai::{Gateway, GatewayConfig};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

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
async fn a_background_response_needs_the_store() {
    let engine = || common::writing("Paris.", FinishReason::Stop, |_| {});
    let app = common::app(engine(), GatewayConfig::default());
    let mut request = in_background(4);
    request["store"] = json!(false);
    let (status, error) = respond(&app, &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "background", "{error}");
    let off = common::app(
        engine(),
        GatewayConfig::default().with_response_store_bytes(0),
    );
    let (status, error) = respond(&off, &in_background(4)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "background", "{error}");
}

/// A request for a streamed background response of at most `tokens` tokens.
fn streamed_in_background(tokens: u32) -> Value {
    let mut request = in_background(tokens);
    request["stream"] = json!(true);
    request
}

/// The events of a server-sent event body, in order.
fn events_of(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("UTF-8 events");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("a JSON event"))
        .collect()
}

/// The text of the output deltas among `events`.
fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .filter_map(|event| event["delta"].as_str())
        .collect()
}

/// `GET /v1/responses/{id}?stream=true` and `more` of `app`: the status, and the events (or the
/// error body as the one event).
async fn follow(app: &axum::Router, id: &str, more: &str) -> (StatusCode, Vec<Value>) {
    let path = format!("/v1/responses/{id}?stream=true{more}");
    let (status, body) = exchange(app.clone(), "GET", &path, None, None).await;
    if status != StatusCode::OK {
        return (
            status,
            vec![serde_json::from_slice(&body).expect("an error body")],
        );
    }
    (status, events_of(&body))
}

/// The events of the body `stream` until one of `kind` (and that one).
async fn events_until(
    stream: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    kind: &str,
) -> Vec<Value> {
    let mut events = Vec::new();
    while !events.iter().any(|event: &Value| event["type"] == kind) {
        let chunk = stream.next().await.expect("more events").expect("the body");
        events.extend(events_of(&chunk));
    }
    events
}

/// POST `request` to `/v1/responses` of `app`: its body as a stream of chunks.
async fn open_stream(
    app: &axum::Router,
    request: &Value,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + use<> {
    let request = axum::http::Request::post("/v1/responses")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(request.to_string()))
        .expect("a valid request");
    body_stream(app, request).await
}

/// The body of `app`'s 200 answer to `request`, as a stream of chunks.
async fn body_stream(
    app: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + use<> {
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().into_data_stream()
}

#[tokio::test(start_paused = true)]
async fn a_streamed_background_response_is_followed_again_from_any_event() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let gateway = || {
        sharing(
            common::writing("Paris.", FinishReason::Stop, |_| {}),
            &store,
        )
    };
    let (runner, other) = (gateway(), gateway());
    let request = streamed_in_background(16);
    let (status, body) = common::post_json(runner.clone(), "/v1/responses", &request).await;
    assert_eq!(status, StatusCode::OK);
    let events = events_of(&body);
    for (number, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], number, "{event}");
    }
    assert_eq!(events[0]["type"], "response.created");
    assert_eq!(events[0]["response"]["background"], true);
    assert_eq!(events.last().expect("events")["type"], "response.completed");
    assert_eq!(text_of(&events), "Paris.");
    // Stored before its last event.
    let id = events[0]["response"]["id"].as_str().expect("an id");
    assert_eq!(get(&other, &json!(id)).await["status"], "completed");

    // Followed again, from the start or after any event, by the gateway that generated it and
    // by another sharing its store.
    for gateway in [&runner, &other] {
        assert_eq!(
            follow(gateway, id, "").await,
            (StatusCode::OK, events.clone())
        );
        let (status, rest) = follow(gateway, id, "&starting_after=3").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rest, events[4..]);
    }
    let (_, nothing) = follow(&runner, id, "&starting_after=1000").await;
    assert!(nothing.is_empty());

    // Not a response that was not streamed in the background.
    let (_, polled) = respond(&runner, &in_background(4)).await;
    let (_, direct) = respond(&runner, &json!({"model": "test", "input": "Hi"})).await;
    for (response, gateway) in [(&polled, &runner), (&polled, &other), (&direct, &runner)] {
        let (status, error) = follow(gateway, response["id"].as_str().expect("an id"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error[0]["error"]["param"], "stream", "{error:?}");
    }
    let (status, _) = follow(&runner, "resp_nothing", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (query, param) in [
        ("&starting_after=soon", "starting_after"),
        ("&include=reasoning", "include"),
    ] {
        let (status, error) = follow(&runner, id, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error[0]["error"]["param"], param, "{error:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_stream_is_picked_up_again_while_the_generation_goes_on() {
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(5));
    let gateway = Gateway::new(
        common::registry(BoxEngine::new(engine.clone())),
        GatewayConfig::default(),
    );
    let background = gateway.background_responses();
    let app = gateway.into_router();
    let mut stream = open_stream(&app, &streamed_in_background(40)).await;
    let first = stream.next().await.expect("a frame").expect("the body");
    let seen = events_of(&first);
    drop(stream);

    background.finished().await;
    assert_eq!(
        engine.cancelled(),
        0,
        "a broken stream does not stop the generation"
    );
    let id = seen[0]["response"]["id"].as_str().expect("an id");
    let last = seen.last().expect("events")["sequence_number"].clone();
    let (status, rest) = follow(&app, id, &format!("&starting_after={last}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rest[0]["sequence_number"],
        last.as_u64().expect("a number") + 1
    );
    let whole: String = "Paris. ".chars().cycle().take(40).collect();
    assert_eq!(text_of(&seen) + &text_of(&rest), whole);
    let ended = rest.last().expect("events");
    assert_eq!(ended["type"], "response.incomplete", "{ended}");
    assert_eq!(get(&app, &json!(id)).await["status"], "incomplete");
}

#[tokio::test(start_paused = true)]
async fn a_followed_stream_ends_with_its_cancel() {
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(5));
    let app = common::app(BoxEngine::new(engine.clone()), GatewayConfig::default());
    let mut stream = open_stream(&app, &streamed_in_background(1_000_000)).await;
    let first = stream.next().await.expect("a frame").expect("the body");
    let id = events_of(&first)[0]["response"]["id"].clone();
    let (status, _) = cancel(&app, id.as_str().expect("an id")).await;
    assert_eq!(status, StatusCode::OK);
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend(events_of(&chunk.expect("the body")));
    }
    let ended = rest.last().expect("events");
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["code"], "response_cancelled");
    until("the engine sees the cancel", async || {
        engine.cancelled() == 1
    })
    .await;
}

/// A gateway over `engine` keeping its responses in `store`.
fn sharing(engine: BoxEngine, store: &Arc<dyn ObjectStore>) -> axum::Router {
    Gateway::new(common::registry(engine), GatewayConfig::default())
        .with_shared_responses(store.clone(), "responses".into())
        .into_router()
}

#[tokio::test(start_paused = true)]
async fn another_gateway_on_the_store_follows_a_streamed_background_response_as_it_runs() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // 100 tokens in 10 s: the runner writes its events at two beats and at the end.
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(100));
    let runner = sharing(BoxEngine::new(engine), &store);
    let other = sharing(common::writing("", FinishReason::Stop, |_| {}), &store);
    let mut stream = open_stream(&runner, &streamed_in_background(100)).await;
    let first = stream.next().await.expect("a frame").expect("the body");
    drop(stream);
    let id = events_of(&first)[0]["response"]["id"].clone();
    let id = id.as_str().expect("an id");
    assert_eq!(get(&other, &json!(id)).await["status"], "in_progress");

    // The other gateway's follower has text while the generation still runs, then the rest.
    let path = format!("/v1/responses/{id}?stream=true&starting_after=1");
    let request = axum::http::Request::get(path).body(axum::body::Body::empty());
    let mut body = body_stream(&other, request.expect("a valid request")).await;
    let mut followed = events_until(&mut body, "response.output_text.delta").await;
    assert_eq!(get(&other, &json!(id)).await["status"], "in_progress");
    while let Some(chunk) = body.next().await {
        followed.extend(events_of(&chunk.expect("the body")));
    }
    let (_, whole) = follow(&runner, id, "").await;
    assert_eq!(followed, whole[2..]);
    let text: String = "Paris. ".chars().cycle().take(100).collect();
    assert_eq!(text_of(&whole), text);
    let ended = followed.last().expect("events");
    assert_eq!(ended["type"], "response.incomplete", "{ended}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_on_another_gateway_sees_the_cancel_sent_there() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let engine = TickingEngine::new("Paris. ", Duration::from_millis(5));
    let runner = sharing(BoxEngine::new(engine.clone()), &store);
    let other = sharing(common::writing("", FinishReason::Stop, |_| {}), &store);
    let mut stream = open_stream(&runner, &streamed_in_background(1_000_000)).await;
    let first = stream.next().await.expect("a frame").expect("the body");
    drop(stream);
    let id = events_of(&first)[0]["response"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let following = {
        let (other, id) = (other.clone(), id.clone());
        tokio::spawn(async move { follow(&other, &id, "").await })
    };
    let (status, _) = cancel(&other, &id).await;
    assert_eq!(status, StatusCode::OK);
    let (status, events) = following.await.expect("followed");
    assert_eq!(status, StatusCode::OK);
    let ended = events.last().expect("events");
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["code"], "response_cancelled");
    until("the runner stops the engine", async || {
        engine.cancelled() == 1
    })
    .await;
}
