//! The gateway over a real socket, with a real HTTP client: streaming and not, a client that
//! disconnects mid-stream, and overload.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TickingEngine;
use dynamo_core::BoxEngine;
use dynamo_openai::GatewayConfig;
use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(address: SocketAddr, path: &str, body: Value) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_whole_answers_over_a_socket() {
    let engine = TickingEngine::new("Paris is the capital.", Duration::from_millis(1));
    let address = common::serve(common::app(
        BoxEngine::new(engine),
        GatewayConfig::default(),
    ))
    .await;
    let (whole, chunks) = tokio::task::spawn_blocking(move || {
        let body = json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5});
        let mut response = post(address, "/v1/chat/completions", body.clone());
        assert_eq!(response.status(), 200);
        let whole: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        let mut streamed = body;
        streamed["stream"] = json!(true);
        let mut response = post(address, "/v1/chat/completions", streamed);
        let lines: Vec<String> = BufReader::new(response.body_mut().as_reader())
            .lines()
            .map(Result::unwrap)
            .filter_map(|line| line.strip_prefix("data: ").map(str::to_owned))
            .collect();
        (whole, lines)
    })
    .await
    .unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], "Paris");
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let text: String = chunks[..chunks.len() - 1]
        .iter()
        .map(|chunk| serde_json::from_str::<Value>(chunk).unwrap())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Paris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_the_engine() {
    let engine = TickingEngine::new("abc", Duration::from_millis(20));
    let watched = engine.clone();
    let address = common::serve(common::app(
        BoxEngine::new(engine),
        GatewayConfig::default(),
    ))
    .await;
    tokio::task::spawn_blocking(move || {
        let body = json!({"model": "test", "prompt": "x", "max_tokens": 10_000, "stream": true});
        let mut response = post(address, "/v1/completions", body);
        let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
        // Read a few chunks, then hang up.
        for _ in 0..6 {
            lines.next().unwrap().unwrap();
        }
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while watched.cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(watched.cancelled(), 1, "the engine saw the cancellation");
    assert_eq!(
        watched.finished.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gives_503_with_retry_after() {
    let engine = TickingEngine::new("abc", Duration::from_millis(20));
    let config = GatewayConfig::default().with_max_in_flight(1);
    let address = common::serve(common::app(BoxEngine::new(engine), config)).await;
    let (status, retry_after, body) = tokio::task::spawn_blocking(move || {
        let long = json!({"model": "test", "prompt": "x", "max_tokens": 10_000, "stream": true});
        let mut first = post(address, "/v1/completions", long);
        let mut lines = BufReader::new(first.body_mut().as_reader()).lines();
        lines.next().unwrap().unwrap();
        let mut second = post(
            address,
            "/v1/completions",
            json!({"model": "test", "prompt": "y"}),
        );
        let retry_after = second
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value =
            serde_json::from_str(&second.body_mut().read_to_string().unwrap()).unwrap();
        (second.status().as_u16(), retry_after, body)
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["error"]["code"], "overloaded");
}
