//! An OpenAI-compatible HTTP gateway over dynamo engines.
//!
//! `dynamo-openai` is the front door of a dynamo deployment. It speaks the OpenAI API to any
//! client and turns each request into a [`GenerateRequest`](dynamo_core::GenerateRequest) for an
//! [`Engine`](dynamo_core::Engine): one worker, or a router in front of many. In between:
//!
//! - **Protocol** ([`protocol`]): chat completions, completions, embeddings, the Responses API,
//!   tokenize and detokenize, and the models list, with strict
//!   validation: a field the gateway does not implement gets a 400 that names it.
//! - **Preprocessing**: a [`Tokenizer`] from a `tokenizer.json` or from GGUF metadata
//!   ([`GgufMetadata`]); [`ChatTemplate`]s rendered with minijinja like Hugging Face's; an
//!   [`IncrementalDecoder`] that never splits a UTF-8 character; a [`StopMatcher`] that holds
//!   back text that may become a stop string; [`ToolCallParser`] (Hermes/Qwen and Llama 3 JSON)
//!   and [`ReasoningSplitter`] (`<think>`).
//! - **Models** ([`ModelRegistry`]): each served name with its engine, tokenizer, chat template,
//!   parsers and [`SamplingDefaults`], the sampling settings the model recommends for requests
//!   that give none (as vLLM applies a model's `generation_config.json`).
//! - **Embeddings** ([`EmbeddingModel`]): a model served by `/v1/embeddings`, an
//!   [`Embedder`](dynamo_core::Embedder) with its tokenizer, registered next to the generation
//!   models ([`ModelRegistry::insert_embedding`]).
//! - **The service** ([`Gateway`]): axum routes for `/v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings`, `/v1/responses` (OpenAI's Responses API, text and function calls; stored
//!   responses under `/v1/responses/{id}`, in memory or in an object store that several
//!   gateways share ([`Gateway::with_shared_responses`]), their input items under
//!   `…/input_items`; background responses, cancelled with `…/cancel`, the streamed ones
//!   followed again with `?stream=true&starting_after=N`), `/v1/models`, `/tokenize` and
//!   `/detokenize` (vLLM's shapes), health probes, `/metrics` and `/openapi.json`;
//!   server-sent events with `[DONE]` and an optional usage chunk (the Responses API's named
//!   events, without `[DONE]`); cancellation of the engine when the client goes away; 503 with
//!   `Retry-After` under overload; optional API keys ([`ApiKeys`], a 401 without one); every error
//!   mapped once by [`ApiError`]; a DEBUG-level `tracing` span per request; [`no_delay`], the
//!   listener that sends each streamed chunk at once. The OpenAPI document ([`openapi_document`])
//!   is derived from the [`protocol`] types, so it describes exactly what the handlers parse and
//!   write.
//!
//! # Example
//!
//! Serve an echo engine under the name `echo`, with a one-token-per-byte tokenizer, and ask it
//! for a completion in-process:
//!
//! ```
//! use axum::body::Body;
//! use axum::http::Request;
//! use dynamo_core::{BoxEngine, EchoEngine};
//! use dynamo_openai::{Gateway, GatewayConfig, ModelEntry, ModelRegistry, Tokenizer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ModelRegistry::default();
//! registry.insert(ModelEntry::new("echo", BoxEngine::new(EchoEngine::new()), Tokenizer::bytes()));
//! let app = Gateway::new(registry, GatewayConfig::default()).into_router();
//!
//! let request = Request::post("/v1/completions")
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"model": "echo", "prompt": "Hello", "max_tokens": 3}"#))?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
//! let answer: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(answer["choices"][0]["text"], "Hel"); // the echo engine repeats the prompt
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Two error types, for two audiences:
//!
//! - [`Error`], for the code that sets a gateway up: loading GGUF metadata, a tokenizer or a
//!   chat template, and tokenizing or rendering. A `#[non_exhaustive]` enum whose variants say
//!   what failed (an unreadable file with its path, GGUF metadata that is malformed or lacks a
//!   key, the tokenizer, the chat template with its message), with the library's error as the
//!   [`source`](std::error::Error::source).
//! - [`ApiError`], for HTTP clients: a status and an OpenAI error body, mapped once from the
//!   class of a [`dynamo_core::Error`] or from what was wrong with the request.
//!
//! # Features
//!
//! `dynamo-openai` has no optional features.

mod embedding;
mod error;
mod http;
mod preprocess;
pub mod protocol;
mod registry;

/// The `object_store` crate that [`Gateway::with_shared_responses`] takes a store of.
pub use object_store;

pub use embedding::EmbeddingModel;
pub use error::Error;
pub use http::metrics::{WorkerGauges, install_prometheus};
pub use http::{
    ApiError, ApiKeys, BackgroundResponses, ErrorBody, ErrorDetail, Gateway, GatewayConfig,
    NoDelayListener, no_delay, openapi_document,
};
pub use preprocess::{
    ChatTemplate, Decode, GgufMetadata, GgufValue, IncrementalDecoder, ParsedToolCall,
    ReasoningFormat, ReasoningSplitter, SplitText, StopMatcher, Tokenizer, ToolCallFormat,
    ToolCallOutput, ToolCallParser,
};
pub use registry::{ModelEntry, ModelRegistry, SamplingDefaults};

/// Seconds since the Unix epoch (0 if the clock is before it): the `created` of responses.
pub(crate) fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
