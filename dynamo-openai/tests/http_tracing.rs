//! Each HTTP request runs in a `tracing` span that names its method, path and request id, and
//! an internal error is logged inside it (and never shown to the client).

mod common;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dynamo_core::{BoxEngine, Error, GenerateRequest, TokenStream};
use dynamo_openai::{ApiKeys, GatewayConfig};
use parking_lot::Mutex;
use serde_json::json;
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

/// An engine that fails every request with an internal error whose text must stay in the log.
#[derive(Clone, Debug)]
struct Broken;

impl tower::Service<GenerateRequest> for Broken {
    type Response = TokenStream;
    type Error = Error;
    type Future = Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: GenerateRequest) -> Self::Future {
        ready(Err(Error::internal("the GPU caught fire (secret detail)")))
    }
}

/// A span or an event as the subscriber saw it: its name (an event's is its message) and its
/// fields as `name=value` text.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: Vec<String>,
    /// For an event: the span it happened in.
    inside: Option<u64>,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields.push(format!("{}={value:?}", field.name()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push(format!("{}={value}", field.name()));
    }
}

/// A subscriber that remembers every span and event, and which span each event was in.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Recording>);

#[derive(Debug, Default)]
struct Recording {
    /// Record only INFO and above, as a subscriber at the default level does.
    info_only: bool,
    next: AtomicU64,
    spans: Mutex<Vec<(u64, Seen)>>,
    events: Mutex<Vec<Seen>>,
    entered: Mutex<Vec<u64>>,
}

impl tracing::Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked at every use: the tests' subscribers differ in what they record.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !self.0.info_only || *metadata.level() <= Level::INFO
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = Seen {
            name: span.metadata().name().to_owned(),
            ..Seen::default()
        };
        span.record(&mut seen);
        self.0.spans.lock().push((id, seen));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            inside: self.0.entered.lock().last().copied(),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.0.events.lock().push(seen);
    }

    fn enter(&self, span: &Id) {
        self.0.entered.lock().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut entered = self.0.entered.lock();
        if let Some(at) = entered.iter().rposition(|&id| id == span.into_u64()) {
            entered.remove(at);
        }
    }
}

/// Send a request the [`Broken`] engine fails, with request id `trace-me-7`, and check that the
/// client is not told the internal detail.
async fn fail_one_request() {
    let app = common::app(BoxEngine::new(Broken), GatewayConfig::default());
    let request = Request::post("/v1/completions")
        .header("content-type", "application/json")
        .header("x-request-id", "trace-me-7")
        .body(Body::from(
            json!({"model": "test", "prompt": "Hi", "max_tokens": 1}).to_string(),
        ))
        .expect("a request");
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body");
    let body = String::from_utf8(body.to_vec()).expect("UTF-8");
    assert!(!body.contains("secret detail"), "{body}");
}

#[tokio::test(flavor = "current_thread")]
async fn requests_run_in_spans_and_internal_errors_are_logged_in_them() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    fail_one_request().await;

    let spans = recorder.0.spans.lock().clone();
    let (span, seen) = spans
        .iter()
        .find(|(_, seen)| seen.name == "request")
        .unwrap_or_else(|| panic!("no request span in {spans:?}"));
    for field in [
        "method=POST",
        "path=/v1/completions",
        "request_id=trace-me-7",
    ] {
        assert!(
            seen.fields.iter().any(|f| f == field),
            "{field} in {seen:?}"
        );
    }
    let events = recorder.0.events.lock().clone();
    let logged = events
        .iter()
        .find(|event| event.fields.iter().any(|f| f.contains("secret detail")))
        .unwrap_or_else(|| panic!("the internal error is not logged: {events:?}"));
    assert_eq!(logged.inside, Some(*span), "{logged:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn at_info_there_is_no_span_and_an_internal_error_names_its_request() {
    let recorder = Recorder(Arc::new(Recording {
        info_only: true,
        ..Recording::default()
    }));
    let _guard = tracing::subscriber::set_default(recorder.clone());
    fail_one_request().await;

    let spans = recorder.0.spans.lock().clone();
    assert!(spans.is_empty(), "spans recorded at INFO: {spans:?}");
    let events = recorder.0.events.lock().clone();
    let logged = events
        .iter()
        .find(|event| event.fields.iter().any(|f| f.contains("secret detail")))
        .unwrap_or_else(|| panic!("the internal error is not logged: {events:?}"));
    assert!(
        logged.fields.iter().any(|f| f == "request_id=trace-me-7"),
        "{logged:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn api_keys_never_reach_a_log_line() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());

    let config = GatewayConfig::default().with_api_keys(ApiKeys::new(["sk-known-secret-1"]));
    let app = common::app(BoxEngine::new(Broken), config);
    for key in ["sk-known-secret-1", "sk-guessed-secret-2"] {
        let request = Request::post("/v1/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(
                json!({"model": "test", "prompt": "Hi", "max_tokens": 1}).to_string(),
            ))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_ne!(response.status(), StatusCode::OK);
    }

    let spans = recorder.0.spans.lock().clone();
    let events = recorder.0.events.lock().clone();
    assert!(
        events
            .iter()
            .any(|event| event.fields.iter().any(|f| f.contains("API key"))),
        "the refusal is logged: {events:?}"
    );
    let seen = spans.iter().map(|(_, seen)| seen).chain(events.iter());
    for seen in seen {
        assert!(
            !seen
                .fields
                .iter()
                .any(|f| f.contains("known-secret") || f.contains("guessed-secret")),
            "a key in the log: {seen:?}"
        );
    }
}
