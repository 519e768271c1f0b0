//! Shared pieces of the gateway's integration tests: a model over a byte tokenizer, and an
//! engine that ticks out tokens and records cancellation the way a real engine sees it.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{
    BoxEngine, Error, FinishReason, GenerateRequest, TokenChunk, TokenStream, Usage,
};
use dynamo_openai::{ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, Tokenizer};
use tokio::sync::mpsc;

pub(crate) mod responses;

/// A ChatML template, as SmolLM2 and Qwen use.
pub(crate) const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                          {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A registry serving `engine` as the model `test`, with a byte tokenizer and ChatML.
pub(crate) fn registry(engine: BoxEngine) -> ModelRegistry {
    let registry = ModelRegistry::default();
    let template = ChatTemplate::new(CHATML).expect("the test template compiles");
    registry
        .insert(ModelEntry::new("test", engine, Tokenizer::bytes()).with_chat_template(template));
    registry
}

/// The gateway's routes over `engine`.
pub(crate) fn app(engine: BoxEngine, config: GatewayConfig) -> axum::Router {
    Gateway::new(registry(engine), config).into_router()
}

/// POST `body` as JSON to `path` of `app`, in process: the answer's status and body.
pub(crate) async fn post_json(
    app: axum::Router,
    path: &str,
    body: &serde_json::Value,
) -> (axum::http::StatusCode, axum::body::Bytes) {
    exchange(app, "POST", path, None, Some(body)).await
}

/// Serve `app` on a free loopback port, with `TCP_NODELAY` as `dynamo-serve` does; the server stops when the test's runtime ends.
pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(dynamo_openai::no_delay(listener), app).await });
    address
}

/// `method` `path` of `app`, in process, as the caller with `key` (if any) and with a JSON
/// `body` (if any): the answer's status and JSON body.
pub(crate) async fn send(
    app: axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (axum::http::StatusCode, serde_json::Value) {
    let (status, bytes) = exchange(app, method, path, key, body).await;
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

/// [`send`]'s request; the answer's status and bytes.
pub(crate) async fn exchange(
    app: axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (axum::http::StatusCode, axum::body::Bytes) {
    use tower::ServiceExt;

    let mut request = axum::http::Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string())),
        None => request.body(axum::body::Body::empty()),
    }
    .expect("a valid request");
    let response = app
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("the body fits");
    (status, bytes)
}

/// An engine that writes `text` (byte tokens) and finishes with `reason`, whatever it is asked,
/// after showing `look` each request.
pub(crate) fn writing(
    text: &'static str,
    reason: FinishReason,
    look: impl Fn(&GenerateRequest) + Clone + Send + Sync + 'static,
) -> BoxEngine {
    BoxEngine::new(tower::service_fn(move |request: GenerateRequest| {
        look(&request);
        let mut chunks: Vec<_> = text
            .bytes()
            .map(|b| Ok(TokenChunk::token(b.into())))
            .collect();
        let usage = Usage {
            prompt_tokens: 1,
            cached_tokens: 0,
            completion_tokens: text.len() as u32,
        };
        chunks.push(Ok(TokenChunk::finish(reason, Some(usage))));
        ready(Ok::<_, Error>(TokenStream::from_chunks(chunks)))
    }))
}

/// An engine that records every request it is given, then answers as the echo engine does.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecordingEngine {
    pub(crate) requests: Arc<parking_lot::Mutex<Vec<GenerateRequest>>>,
}

impl RecordingEngine {
    /// The requests received so far.
    pub(crate) fn requests(&self) -> Vec<GenerateRequest> {
        self.requests.lock().clone()
    }
}

impl tower::Service<GenerateRequest> for RecordingEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        self.requests.lock().push(request.clone());
        tower::Service::call(&mut dynamo_core::EchoEngine::new(), request)
    }
}

/// An engine that emits the bytes of `text` one token per `delay`, cycling, until
/// `max_tokens`; it counts the generations it started, finished and saw cancelled.
#[derive(Clone, Debug)]
pub(crate) struct TickingEngine {
    pub(crate) text: &'static str,
    pub(crate) delay: Duration,
    pub(crate) started: Arc<AtomicUsize>,
    pub(crate) finished: Arc<AtomicUsize>,
    pub(crate) cancelled: Arc<AtomicUsize>,
}

impl TickingEngine {
    pub(crate) fn new(text: &'static str, delay: Duration) -> Self {
        TickingEngine {
            text,
            delay,
            started: Arc::default(),
            finished: Arc::default(),
            cancelled: Arc::default(),
        }
    }

    pub(crate) fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

impl tower::Service<GenerateRequest> for TickingEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = Ready<Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        self.started.fetch_add(1, Ordering::SeqCst);
        let cancel = request.cancellation().child_token();
        let (sender, receiver) = mpsc::channel(4);
        let engine = self.clone();
        let max = request.limits.max_tokens.unwrap_or(16) as usize;
        let prompt_tokens = request.tokens.len() as u32;
        let watch = cancel.clone();
        tokio::spawn(async move {
            let bytes = engine.text.as_bytes();
            for i in 0..max {
                tokio::select! {
                    _ = watch.cancelled() => {
                        engine.cancelled.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    _ = tokio::time::sleep(engine.delay) => {}
                }
                let mut chunk = TokenChunk::token(u32::from(bytes[i % bytes.len()]));
                if i + 1 == max {
                    chunk.finish_reason = Some(FinishReason::Length);
                    chunk.usage = Some(Usage {
                        prompt_tokens,
                        cached_tokens: 0,
                        completion_tokens: max as u32,
                    });
                }
                if sender.send(Ok(chunk)).await.is_err() {
                    engine.cancelled.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            engine.finished.fetch_add(1, Ordering::SeqCst);
        });
        ready(Ok(TokenStream::from_receiver(receiver, cancel)))
    }
}
