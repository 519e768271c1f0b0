//! Put dynamo's gateway and KV-aware router in front of [SGLang](https://docs.sglang.ai)
//! servers, without changing them.
//!
//! A [`SglangServer`] names one `python -m sglang.launch_server` process and gives what a
//! router needs from it:
//!
//! | what | how | from SGLang |
//! |---|---|---|
//! | an [`Engine`](dynamo_core::Engine) ([`SglangServer::engine`], a [`SglangEngine`]) | `POST /generate` with `input_ids`, `sampling_params` and `stream: true` (`false` when the client reads the answer whole: one answer object, one chunk); output ids from `output_ids`, usage, cached tokens and log-probabilities from `meta_info` | the native API (`python/sglang/srt/entrypoints/http_server.py`) |
//! | its load ([`SglangServer::load_poller`]) | `GET /metrics`: `sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage` | `--enable-metrics` |
//! | its KV events (`SglangServer::kv_events`, feature `events`) | the ZMQ publisher, vLLM's layout, decoded by `dynamo-transport` | `--kv-events-config` |
//!
//! Sampling fields go in `sampling_params` under SGLang's names: `max_new_tokens`,
//! `min_new_tokens`, `temperature`, `top_p`, `top_k`, `min_p`, `frequency_penalty`,
//! `presence_penalty`, `repetition_penalty`, `stop_token_ids`, `ignore_eos`; a LoRA adapter
//! goes in `lora_path`. A seed goes in `sampling_seed` (SGLang 0.5.3 and later; it changes
//! the sampling only on a server started with `--enable-deterministic-inference`, and a seed
//! above 2³¹ − 1 is refused, since 0.5.3 holds it in 32 bits). Log-probabilities are asked for
//! with `return_logprob`, `top_logprobs_num` and `logprob_start_len: -1`, and each chunk's
//! come from the last entries of `meta_info.output_token_logprobs` and `output_top_logprobs`
//! (only those are parsed, though SGLang's default streams repeat every score so far). The
//! prompt's (`prompt_logprobs`, with a whole answer only) are asked for with
//! `logprob_start_len: 0` and come from `input_token_logprobs` and `input_top_logprobs`. A cache
//! salt goes in `cache_salt`, which SGLang reads from 0.5.18 on; earlier versions drop the
//! field unread, so their prefix cache is shared across salts. A JSON format goes in
//! `sampling_params.json_schema` as text (`{"type": "object"}` for any JSON object), a
//! regular expression in `sampling_params.regex`, and a choice there too (the alternation of
//! its texts, each escaped), which SGLang's grammar backend enforces; a Lark grammar is refused
//! (SGLang's `ebnf` is another syntax).
//!
//! Errors take the class of the HTTP status SGLang gives (as `dynamo_upstream` maps statuses):
//! an error answer's status, an `{"error": …}` event's `code` (`invalid_request` without one,
//! before 0.5.13), an abort's `status_code`; an abort without one (`/abort_request`, a pause, a
//! weight update) is `unavailable`, so the frontend may continue the request elsewhere.
//!
//! # Example
//!
//! ```no_run
//! use dynamo_core::{EngineExt, GenerateRequest};
//! use dynamo_sglang::SglangServer;
//!
//! # async fn run() -> Result<(), dynamo_core::Error> {
//! let server = SglangServer::new("http://10.0.0.8:30000")?;
//! let answer = server
//!     .engine()
//!     .generate_all(GenerateRequest::new("r1", "qwen", vec![9707, 11, 1879]).with_max_tokens(16))
//!     .await?;
//! tracing::info!(tokens = ?answer.tokens, cached = ?answer.usage.map(|u| u.cached_tokens));
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `events` | `SglangServer::kv_events`, SGLang's ZMQ KV events through `dynamo-transport` | no |

mod engine;
mod logprobs;
mod server;
mod wire;

pub use engine::SglangEngine;
pub use server::{SglangServer, load_metrics};
