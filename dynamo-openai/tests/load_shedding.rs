//! A gateway over a router behind tower's load shedding: when every worker is busy and the
//! router can queue nobody, the client gets a 503 with `Retry-After` and an OpenAI error body.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dynamo_core::{BlockSize, EchoEngine, EngineExt, Error, WorkerId};
use dynamo_openai::GatewayConfig;
use dynamo_router::{BusyThresholds, QueueOrder, RouterService};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

fn chat(stream: bool) -> Request<Body> {
    let body = json!({
        "model": "test",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 4,
        "stream": stream,
    });
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request")
}

#[tokio::test]
async fn a_router_without_capacity_is_answered_with_503_and_retry_after() {
    // One slow worker, busy at one request, and no wait queue.
    let router = RouterService::builder(BlockSize::new(4).expect("not zero"))
        .thresholds(BusyThresholds {
            max_active_requests: Some(1),
            ..BusyThresholds::default()
        })
        .queue(QueueOrder::Fcfs, 0)
        .build();
    let slow = EchoEngine::new().with_token_delay(Duration::from_millis(50));
    router.insert_worker(WorkerId::new(1), slow);
    let engine = ServiceBuilder::new()
        .map_err(Error::from_boxed)
        .load_shed()
        .concurrency_limit(64)
        .service(router.clone())
        .boxed_engine();
    let app = common::app(engine, GatewayConfig::default());

    // A streamed answer holds the worker while its body is read.
    let streaming = app.clone().oneshot(chat(true)).await.expect("a response");
    assert_eq!(streaming.status(), StatusCode::OK);

    let shed = app.clone().oneshot(chat(false)).await.expect("a response");
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        shed.headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()),
        Some("1")
    );
    let bytes = axum::body::to_bytes(shed.into_body(), 1 << 20)
        .await
        .expect("a body");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    // Once the stream is read to its end the worker is free again.
    axum::body::to_bytes(streaming.into_body(), 1 << 20)
        .await
        .expect("the stream");
    let served = app.oneshot(chat(false)).await.expect("a response");
    assert_eq!(served.status(), StatusCode::OK);
}
