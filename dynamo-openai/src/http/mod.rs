//! The axum service: routes, shared state and the request-body extractor.

mod answer;
mod auth;
mod chat;
mod chat_chunk;
mod choices;
mod completions;
mod embeddings;
mod error;
mod generate;
mod listener;
mod logprobs;
pub(crate) mod metrics;
mod models;
mod openapi;
mod prepare;
mod required_calls;
mod responses;
mod sse;
mod structured;
mod tokenize;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

pub use auth::ApiKeys;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use listener::{NoDelayListener, no_delay};
pub use openapi::openapi_document;
pub use responses::background::BackgroundResponses;

use crate::registry::{ModelEntry, ModelRegistry};
use generate::InFlight;

/// The settings of a [`Gateway`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The largest request body accepted, in bytes; larger ones get a 413. Default 16 MiB.
    pub body_limit: usize,
    /// The keys clients must send as `Authorization: Bearer <key>`; a request without one of
    /// them gets a 401. Empty (the default): the gateway is open. The health probes never
    /// need a key; `/metrics` does unless [`GatewayConfig::open_metrics`].
    pub api_keys: ApiKeys,
    /// Serve `/metrics` without a key even when [`GatewayConfig::api_keys`] is set, for a
    /// scraper on a trusted network. Default `false`.
    pub open_metrics: bool,
    /// Requests served at once; more get a 503 with `Retry-After`. Default 4,096.
    pub max_in_flight: usize,
    /// `max_tokens` for requests that give none. `None` (the default) lets them run to the
    /// end of the model's context, as vLLM does.
    pub default_max_tokens: Option<u32>,
    /// The most choices one chat or text completion may ask for (`n`, and `best_of`); more
    /// get a 400 naming the field. Default 16.
    pub max_choices: u32,
    /// The memory kept for stored responses (`/v1/responses` with `store` true or unset), in
    /// bytes of their JSON; the oldest are dropped to make room. 0 stores none (`store: true`
    /// and `previous_response_id` are then refused). Default 64 MiB. Not used by a gateway
    /// whose responses go to a shared store ([`Gateway::with_shared_responses`]).
    pub response_store_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            body_limit: 16 << 20,
            api_keys: ApiKeys::default(),
            open_metrics: false,
            max_in_flight: 4096,
            default_max_tokens: None,
            max_choices: 16,
            response_store_bytes: 64 << 20,
        }
    }
}

impl GatewayConfig {
    /// Set [`GatewayConfig::body_limit`].
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Set [`GatewayConfig::max_in_flight`].
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Set [`GatewayConfig::api_keys`].
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// Set [`GatewayConfig::open_metrics`].
    pub fn with_open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }

    /// Set [`GatewayConfig::default_max_tokens`].
    pub fn with_default_max_tokens(mut self, tokens: u32) -> Self {
        self.default_max_tokens = Some(tokens);
        self
    }

    /// Set [`GatewayConfig::response_store_bytes`].
    pub fn with_response_store_bytes(mut self, bytes: usize) -> Self {
        self.response_store_bytes = bytes;
        self
    }

    /// Set [`GatewayConfig::max_choices`] (at least 1).
    pub fn with_max_choices(mut self, choices: u32) -> Self {
        self.max_choices = choices.max(1);
        self
    }
}

/// An OpenAI-compatible HTTP service over a [`ModelRegistry`].
///
/// [`Gateway::into_router`] gives an [`axum::Router`] with these routes:
///
/// | route | what |
/// |---|---|
/// | `POST /v1/chat/completions` | chat, streaming (SSE) or not |
/// | `POST /v1/completions` | text completion, streaming or not |
/// | `POST /v1/embeddings` | vectors from an embedding model ([`ModelRegistry::insert_embedding`]) |
/// | `POST /v1/responses` | OpenAI's Responses API, text and function calls, streaming or not |
/// | `GET`, `DELETE /v1/responses/{id}` | a stored response ([`GatewayConfig::response_store_bytes`]); a streamed background one's events with `?stream=true` |
/// | `GET /v1/responses/{id}/input_items` | a stored response's input items, a page at a time |
/// | `POST /v1/responses/{id}/cancel` | stop a background response (`background: true`) |
/// | `GET /v1/models` | the served models, embedding models included |
/// | `POST /tokenize`, `/detokenize` | the model's tokenizer, as vLLM serves it |
/// | `GET /health`, `/live`, `/ready` | liveness and readiness (ready: at least one model) |
/// | `GET /metrics` | Prometheus text, when a handle was given |
/// | `GET /openapi.json` | the OpenAPI 3.1 document |
///
/// With [`GatewayConfig::api_keys`] set, every route but the health probes (and `/metrics`
/// when [`GatewayConfig::open_metrics`]) answers a request without a valid
/// `Authorization: Bearer` key with a 401 and an OpenAI error body (`invalid_api_key`).
///
/// Serve it from a [`no_delay`] listener so that each streamed chunk leaves at once.
///
/// Every response carries an `x-request-id` header: the client's own if it sent one, else the
/// completion id. A client that disconnects cancels its generation: the response stream is
/// dropped, and with it the engine's token stream.
///
/// Each request runs in a DEBUG-level `tracing` span named `request` (with its method, path and
/// request id), made by tower-http's `TraceLayer`, which also records the response's status and
/// latency; internal errors are logged as ERROR events inside it, with a `request_id` field when
/// they happen before the answer starts. Install a `tracing` subscriber to see them.
///
/// ```
/// use dynamo_openai::{Gateway, GatewayConfig, ModelRegistry};
///
/// let registry = ModelRegistry::default();
/// let app: axum::Router = Gateway::new(registry, GatewayConfig::default()).into_router();
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct Gateway {
    registry: ModelRegistry,
    config: GatewayConfig,
    metrics: Option<PrometheusHandle>,
    /// Where stored responses go instead of memory, and under which prefix.
    shared_responses: Option<(Arc<dyn ObjectStore>, ObjectPath)>,
    background: BackgroundResponses,
}

/// What every handler sees.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) registry: ModelRegistry,
    pub(crate) config: GatewayConfig,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) in_flight: Arc<InFlight>,
    /// Stored responses.
    pub(crate) responses: responses::ResponseStore,
    /// The background responses this gateway generates.
    pub(crate) background: responses::background::Running,
    next_id: AtomicU64,
    /// Distinguishes ids across restarts.
    id_prefix: String,
}

impl Shared {
    /// The served model called `name`, or the 404 that says it is not.
    pub(crate) fn model(&self, name: &str) -> Result<Arc<ModelEntry>, ApiError> {
        self.registry
            .get(name)
            .ok_or_else(|| ApiError::model_not_found(name))
    }

    /// A fresh request id: the gateway's start time and a counter, in hex.
    fn fresh_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:08x}", self.id_prefix)
    }
}

impl Gateway {
    /// A gateway serving `registry`.
    pub fn new(registry: ModelRegistry, config: GatewayConfig) -> Self {
        Gateway {
            registry,
            config,
            metrics: None,
            shared_responses: None,
            background: BackgroundResponses::default(),
        }
    }

    /// The background responses its routes will generate, for a server that drains before it
    /// exits: once it accepts no new connection, [`BackgroundResponses::finished`] waits for
    /// them (`dynamo-serve` does, within its drain timeout).
    pub fn background_responses(&self) -> BackgroundResponses {
        self.background.clone()
    }

    /// Serve `/metrics` from `handle` (see [`install_prometheus`](crate::install_prometheus)).
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Keep stored responses (`/v1/responses`) under `prefix` in `store` instead of this
    /// gateway's memory, so that every gateway given the same store and prefix serves
    /// `previous_response_id`, `GET` and `DELETE` for the responses any of them stored (one
    /// JSON object a response, read only by the API key that stored it; nothing is dropped:
    /// how long they are kept is the store's own lifecycle rule).
    /// [`GatewayConfig::response_store_bytes`] no longer applies.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use dynamo_openai::object_store::{memory::InMemory, path::Path};
    /// use dynamo_openai::{Gateway, GatewayConfig, ModelRegistry};
    ///
    /// // One store for every frontend: S3 or a shared directory in a deployment.
    /// let shared = Arc::new(InMemory::new());
    /// let first = Gateway::new(ModelRegistry::default(), GatewayConfig::default())
    ///     .with_shared_responses(shared.clone(), Path::from("responses"));
    /// let second = Gateway::new(ModelRegistry::default(), GatewayConfig::default())
    ///     .with_shared_responses(shared, Path::from("responses"));
    /// # let _ = (first.into_router(), second.into_router());
    /// ```
    pub fn with_shared_responses(
        mut self,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    ) -> Self {
        self.shared_responses = Some((store, prefix));
        self
    }

    /// The routes, ready for `axum::serve`.
    pub fn into_router(self) -> axum::Router {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros());
        let limit = self.config.body_limit;
        let guard = Arc::new(auth::Guard {
            keys: self.config.api_keys.clone(),
            open_metrics: self.config.open_metrics,
        });
        let shared = Arc::new(Shared {
            registry: self.registry,
            in_flight: Arc::new(InFlight::new(self.config.max_in_flight.max(1))),
            responses: match self.shared_responses {
                Some((store, prefix)) => responses::ResponseStore::in_objects(store, prefix),
                None => responses::ResponseStore::in_memory(self.config.response_store_bytes),
            },
            background: responses::background::Running::new(self.background),
            config: self.config,
            metrics: self.metrics,
            next_id: AtomicU64::new(0),
            id_prefix: format!("{:x}", started & 0xffff_ffff),
        });
        axum::Router::new()
            .route("/v1/chat/completions", post(chat::handle))
            .route("/v1/completions", post(completions::handle))
            .route("/v1/embeddings", post(embeddings::handle))
            .route("/v1/responses", post(responses::handle))
            .route(
                "/v1/responses/{id}",
                get(responses::retrieve).delete(responses::delete),
            )
            .route(
                "/v1/responses/{id}/cancel",
                post(responses::background::cancel),
            )
            .route(
                "/v1/responses/{id}/input_items",
                get(responses::input_items::list),
            )
            .route("/v1/models", get(models::list))
            .route("/tokenize", post(tokenize::tokenize))
            .route("/detokenize", post(tokenize::detokenize))
            .route("/health", get(models::health))
            .route("/live", get(models::live))
            .route("/ready", get(models::ready))
            .route("/metrics", get(models::metrics))
            .route("/openapi.json", get(openapi::serve))
            .fallback(models::not_found)
            .layer(DefaultBodyLimit::max(limit))
            .layer(axum::middleware::from_fn_with_state(
                guard,
                auth::require_key,
            ))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                request_id,
            ))
            .with_state(shared)
    }
}

/// A handler's response. A refusal (an error before the answer started) is counted here, once;
/// the `model` label is the requested name only when the gateway serves it (`unknown`
/// otherwise), so clients cannot grow the label set.
pub(crate) fn respond(
    shared: &Shared,
    model: &str,
    endpoint: &'static str,
    result: Result<axum::response::Response, ApiError>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    result.unwrap_or_else(|error| {
        let label = shared
            .model(model)
            .map_or_else(|_| "unknown".to_owned(), |entry| entry.name.clone());
        metrics::request_done(&label, endpoint, error.status());
        error.into_response()
    })
}

/// The request id header.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served: the client's `x-request-id` when it is a sane one
/// (visible ASCII, at most 128 bytes), else a fresh one. Completion ids and engine request ids
/// derive from it.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

tokio::task_local! {
    /// The id of the request whose handler is running: an internal error logged while it
    /// runs names it even when the request's span is not recorded (see [`request_span`]).
    pub(crate) static CURRENT_REQUEST: String;
}

/// The `tracing` span of one HTTP request, named by its method, path and [`RequestId`]; the
/// events of the request (an internal error, the response's status and latency) happen in it.
///
/// It is a DEBUG span: a subscriber at the default INFO level neither builds nor enters it
/// (building it formatted its fields for every request, a few percent of the gateway's CPU
/// per request), and an internal error then names its request by a `request_id` field.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id,
    )
}

/// Give every request a [`RequestId`], and echo it in the response's `x-request-id`.
async fn request_id(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let client = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            value.len() <= 128 && !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned);
    let id = client.unwrap_or_else(|| shared.fresh_id());
    let header = HeaderValue::from_str(&id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = CURRENT_REQUEST.scope(id, next.run(request)).await;
    if let Ok(value) = header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// A JSON body whose every failure is an OpenAI error: 413 over the size limit, 400 with
/// serde's message (which names the field) when it does not parse.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T> FromRequest<Arc<Shared>> for JsonBody<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(request, shared)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::payload_too_large(shared.config.body_limit)
                    }
                    _ => ApiError::invalid_request(format!(
                        "cannot read the request body: {rejection}"
                    )),
                })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::invalid_request(format!("the request body is not valid: {error}"))
            })
    }
}
