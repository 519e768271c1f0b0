//! KV-aware routing inside an existing axum app.
//!
//! The app owns a [`RouterService`] in its state and calls it from a handler, as it would any
//! tower service. Four in-process echo workers stand in for remote engines (they answer with
//! the prompt, one token every 20 ms); they publish no KV events, so the router runs in
//! approximate mode and learns where prefixes live from its own decisions.
//!
//! ```text
//! cargo run --example router_http --features router [-- --port 8080]
//! curl -N localhost:8080/generate -H 'content-type: application/json' -d '{"text": "You are a helpful assistant. Hi!", "max_tokens": 8}'
//! curl localhost:8080/workers
//! ```
//!
//! Prompts are turned into tokens one byte each, so the echoed tokens read back as text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dynamo::router::{BusyThresholds, RouterService};
use dynamo::{
    BlockSize, EchoEngine, EngineExt, Error, ErrorClass, GenerateRequest, RoutingHints, WorkerId,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

const WORKERS: u64 = 4;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The body of `POST /generate`.
#[derive(Debug, Deserialize)]
struct GenerateBody {
    /// The prompt as text (one token per byte) ...
    text: Option<String>,
    /// ... or as token ids.
    tokens: Option<Vec<u32>>,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    /// Requests of one session stay on one worker.
    session_id: Option<String>,
}

fn default_max_tokens() -> u32 {
    16
}

/// Stream the generation as JSON lines: one per chunk, the last with the finish reason.
async fn generate(State(router): State<RouterService>, Json(body): Json<GenerateBody>) -> Response {
    let tokens = match (body.tokens, body.text) {
        (Some(tokens), None) => tokens,
        (None, Some(text)) => text.bytes().map(u32::from).collect(),
        _ => {
            let error = Error::invalid_request("give exactly one of `text` and `tokens`");
            return error_response(&error);
        }
    };
    let id = format!("req-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let request = GenerateRequest::new(id, "echo", tokens)
        .with_max_tokens(body.max_tokens)
        .with_routing(RoutingHints {
            session_id: body.session_id,
            ..Default::default()
        });
    let stream = match router.clone().generate(request).await {
        Ok(stream) => stream,
        Err(error) => return error_response(&error),
    };
    // Dropping the body (the client went away) drops the stream, which cancels the worker's
    // generation and releases its booked load.
    let lines = stream.map(|chunk| {
        let line = match chunk {
            Ok(chunk) => json!({
                "text": String::from_utf8_lossy(&chunk.tokens.iter().map(|&t| t as u8).collect::<Vec<_>>()),
                "tokens": chunk.tokens,
                "finish_reason": chunk.finish_reason.map(|r| r.as_openai_str()),
            }),
            Err(error) => json!({ "error": { "message": error.to_string(), "type": error.class().name() } }),
        };
        Ok::<_, Infallible>(format!("{line}\n"))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The load the router has booked on each worker.
async fn workers(State(router): State<RouterService>) -> Json<serde_json::Value> {
    let selector = router.selector();
    let workers: Vec<_> = selector
        .workers()
        .into_iter()
        .map(|worker| {
            let load = selector.load().load(worker);
            json!({
                "worker": worker.to_string(),
                "active_requests": load.active_requests,
                "active_prefill_tokens": load.active_prefill_tokens,
                "active_decode_blocks": load.active_decode_blocks,
            })
        })
        .collect();
    Json(json!({ "workers": workers, "queued": router.queued() }))
}

/// Each error class maps to one status, once.
fn error_response(error: &Error) -> Response {
    let status = match error.class() {
        ErrorClass::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Overloaded | ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Cancelled | ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = json!({ "error": { "message": error.to_string(), "type": error.class().name() } });
    let mut response = (status, Json(body)).into_response();
    if let Some(after) = error.retry_after()
        && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 8080;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port takes a port number, got {value:?}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = port_from_args()?;
    let router = RouterService::builder(BlockSize::new(16)?)
        .thresholds(BusyThresholds {
            max_active_requests: Some(64),
            ..Default::default()
        })
        .build();
    for id in 0..WORKERS {
        let engine = EchoEngine::new().with_token_delay(Duration::from_millis(20));
        router.insert_worker(WorkerId::new(id), engine);
    }

    let app = axum::Router::new()
        .route("/generate", post(generate))
        .route("/workers", get(workers))
        .with_state(router);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("routing over {WORKERS} echo workers on http://{address}");
    println!(
        "  curl -N {address}/generate -H 'content-type: application/json' -d '{{\"text\": \"Hello, router!\", \"max_tokens\": 8}}'"
    );
    println!("  curl {address}/workers");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
