//! Engines over other servers' HTTP APIs: put dynamo's gateway and router in front of vLLM,
//! SGLang, TensorRT-LLM, llama.cpp or any OpenAI-compatible server, unchanged.
//!
//! An upstream engine is an [`Engine`](dynamo_core::Engine) like any other: it takes a
//! [`GenerateRequest`](dynamo_core::GenerateRequest) of token ids and returns a
//! [`TokenStream`](dynamo_core::TokenStream). Token ids travel end to end, so the gateway's
//! tokenizer, chat template, stop strings and detokenizer stay the single source of truth; the
//! server only computes.
//!
//! | part | what it does |
//! |---|---|
//! | [`HttpClient`] | HTTP/1.1 connections to one server, each driven by the task that reads its answer ([`ResponseBody`]) and pooled while idle; connection failures are `unavailable` |
//! | [`CompletionsEngine`] | the generic adapter over `/v1/completions`: streamed, parsed incrementally ([`SseDecoder`]), cancelled by dropping the stream; one non-streamed call when the client reads the answer whole ([`Delivery::Whole`](dynamo_core::Delivery::Whole)) |
//! | [`Dialect`] | what a server accepts beyond OpenAI's fields ([`Extensions`]), how prompts go ([`PromptFormat`]) and where output ids come from ([`OutputTokens`]); an unsupported field is refused, never dropped; an output format ([`GenerateRequest::format`](dynamo_core::GenerateRequest::format)) goes in the field and form the server reads ([`FormatField`]: OpenAI's `response_format`, vLLM's with its `structured_outputs`, TensorRT-LLM's, llama.cpp's `json_schema`), for the server to enforce, or is refused where the server takes none (the default) |
//! | [`error_from_status`] | HTTP statuses and error bodies as our error classes (503 + `Retry-After` is `overloaded` with the hint) |
//! | [`event_stream`] | the loop of every streamed answer: body frames to events ([`SseDecoder`]) to the chunks an engine's [`EventHandler`] makes, with cancellation and cut streams as errors |
//! | [`whole_answer`] | the same handler over a non-streamed answer, read in one bounded body |
//! | [`MetricsPoller`] | a server's load (running, waiting, KV usage) from its Prometheus `/metrics`, bounded, with a staleness limit ([`LoadView`]) |
//!
//! The engine-specific crates (`dynamo-vllm`, `dynamo-sglang`, `dynamo-trtllm`) build on these
//! parts; this crate alone serves the servers that publish no KV events (llama.cpp's server,
//! another gateway, our own `dynamo-serve`), routed with the router's approximate index.
//!
//! # Example
//!
//! An engine over an OpenAI-compatible server that returns text: the ids of the answer come
//! from the gateway's tokenizer ([`OutputTokens::Retokenize`]); here a toy one.
//!
//! ```no_run
//! use std::sync::Arc;
//! use dynamo_core::{BoxError, EngineExt, GenerateRequest, Token};
//! use dynamo_upstream::{CompletionsEngine, Dialect, HttpClient, HttpConfig, OutputTokens, TextCodec};
//!
//! struct Bytes;
//! impl TextCodec for Bytes {
//!     fn encode(&self, text: &str) -> Result<Vec<Token>, BoxError> {
//!         Ok(text.bytes().map(Token::from).collect())
//!     }
//!     fn decode(&self, tokens: &[Token]) -> Result<String, BoxError> {
//!         Ok(tokens.iter().map(|&t| char::from(t as u8)).collect())
//!     }
//! }
//!
//! # async fn run() -> Result<(), dynamo_core::Error> {
//! let client = HttpClient::new("http://127.0.0.1:8080", HttpConfig::default())?;
//! let dialect = Dialect::openai().output(OutputTokens::Retokenize(Arc::new(Bytes)));
//! let mut engine = CompletionsEngine::new(client, dialect).default_max_tokens(256);
//! let answer = engine.generate_all(GenerateRequest::new("r1", "model", vec![72, 105])).await?;
//! tracing::info!(tokens = answer.tokens.len(), cached = ?answer.usage.map(|u| u.cached_tokens));
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `llama-cpp` | nothing in the library: the test against llama.cpp's server (`tests/llama_cpp.rs`), which needs the PyPI package `xllamacpp` | no |
//!
//! Only `http://` is spoken; put a TLS-terminating proxy in front of a server that accepts only
//! HTTPS.

mod client;
mod codec;
mod connection;
mod dialect;
mod engine;
mod format;
mod metrics;
mod number;
mod poller;
mod sse;
mod status;
mod stream;
mod wire;

pub use client::{HttpClient, HttpConfig, read_body};
pub use codec::{OutputTokens, PromptFormat, TextCodec};
pub use connection::ResponseBody;
pub use dialect::{Dialect, Extensions};
pub use engine::CompletionsEngine;
pub use format::FormatField;
pub use metrics::{Sample, samples};
pub use number::json_float;
pub use poller::{EngineLoad, KvCapacity, LoadMetrics, LoadView, MetricsPoller};
pub use sse::{SseDecoder, SseError, SseEvent};
pub use status::{error_from_status, retry_after};
pub use stream::{EventHandler, event_stream, whole_answer};
