//! Put dynamo's gateway and router in front of
//! [TensorRT-LLM](https://nvidia.github.io/TensorRT-LLM/) servers (`trtllm-serve`), without
//! changing them.
//!
//! | what | how | from TensorRT-LLM |
//! |---|---|---|
//! | an [`Engine`](dynamo_core::Engine) ([`TrtllmServer::engine`]) | `POST /v1/completions`, streamed (one non-streamed call when the client reads the answer whole), prompt as token ids, `"detokenize": false` so that each chunk's `token_ids` carries its new ids | `tensorrt_llm/serve/openai_protocol.py` (`CompletionRequest.detokenize`), `postprocess_handlers.py` (`token_ids_diff` when not detokenizing) |
//! | the chosen tokens' log-probabilities | `"logprobs": 1`; each chunk's `logprobs.token_logprobs[i]` is the score of its `token_ids[i]` (as many scores as ids, or the answer ends with an `internal` error); alternatives are refused | `openai_protocol.py` (`CompletionLogProbs`), `postprocess_handlers.py` (`create_completion_logprobs`: tokens and alternatives written as text, even without detokenizing) |
//! | its load ([`TrtllmServer::load_poller`]) | `GET /metrics`: a JSON list of iteration statistics (not Prometheus text); the last one's `numActiveRequests`, `numQueuedRequests` and `kvCacheStats.usedNumBlocks / maxNumBlocks` | `openai_server.py` (`get_iteration_stats`); filled only when the server runs with `enable_iter_perf_stats` |
//! | its KV events ([`TrtllmServer::kv_event_poller`]) | `POST /kv_cache_events`, polled (every 100 ms by default): a JSON list of `created`, `stored` (blocks with their token ids), `removed` and `updated` events, decoded by [`TrtllmEventDecoder`] into the router's events, our block hashes recomputed from the token ids, each block in the tier of its `cache_level` (0 device, 1 host memory, 2 disk), moved between tiers when an `updated` event changes its level (offload, onboard); a `removed` block taken out with every known block stored after it, which the server frees with it without naming them; gaps in the event ids reported and counted | `openai_server.py` (`get_kv_cache_events`), `_utils.py` (`KVCacheEventSerializer`), `kvCacheManager.cpp` (offload and onboard, `freeChildren`); needs `kv_cache_config.event_buffer_max_size` > 0 and block reuse |
//!
//! The request is validated strictly by the server (`extra="forbid"`): only the fields it
//! defines are sent — OpenAI's, plus `top_k`, `min_p`, `repetition_penalty`,
//! `stop_token_ids`, `ignore_eos`, `min_tokens`, `logprobs` and `response_format` (an output
//! format in the server's own form, `{"type": "json_object"}`, `{"type": "json", "schema":
//! …}` or `{"type": "regex", "regex": …}` for a regular expression or a choice, enforced by a
//! server run with a `guided_decoding_backend`). A cache salt, a LoRA adapter
//! (the server takes a `lora_request` object, not a name) and log-probabilities of alternative
//! tokens (`top_logprobs`, or a completion's `logprobs` above 0) are refused with
//! `invalid_request`: the server names alternatives by their text, and two tokens with the same
//! text share one entry, so no token id can be given for them honestly. Each chosen token's
//! log-probability is passed on (the server clamps it at −9999). The router's block size must
//! be the server's `tokens_per_block` for its KV events to apply (a stored block of another
//! size is refused with [`EventsError::BlockSizeMismatch`]).
//!
//! # Example
//!
//! ```no_run
//! use dynamo_core::{EngineExt, GenerateRequest};
//! use dynamo_trtllm::TrtllmServer;
//!
//! # async fn run() -> Result<(), dynamo_core::Error> {
//! let server = TrtllmServer::new("http://10.0.0.9:8000")?.model("llama");
//! let answer = server
//!     .engine()
//!     .generate_all(GenerateRequest::new("r1", "llama", vec![128000, 9906]).with_max_tokens(16))
//!     .await?;
//! tracing::info!(tokens = ?answer.tokens);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! `dynamo-trtllm` has no optional features.

mod events;
mod server;

pub use events::{EventCounts, EventsError, KvEventPoller, KvEventStream, TrtllmEventDecoder};
pub use server::{TrtllmServer, dialect, read_iteration_stats};
