//! One vLLM server: its engine, its load and its KV events.

use std::sync::Arc;

use dynamo_core::Error;
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, HttpClient, HttpConfig, KvCapacity, LoadMetrics,
    MetricsPoller, OutputTokens, TextCodec,
};

/// How vLLM's OpenAI-compatible server is spoken to: every extension field it accepts
/// (`vllm/entrypoints/openai/completion/protocol.py`), ids out from `token_ids`, an output
/// format as `response_format` (`json_object`, or `json_schema` with the schema), which vLLM
/// enforces with its structured-output backend.
pub fn dialect() -> Dialect {
    Dialect::openai()
        .named("vLLM")
        .extensions(Extensions::VLLM)
        .output(OutputTokens::TokenIdsField)
}

/// vLLM's load gauges (`vllm/v1/metrics/loggers.py`): the KV usage under its current name
/// first, then the name it had before (`gpu_cache_usage_perc`); both are fractions. The
/// cache's size is the labels `num_gpu_blocks` × `block_size` of `vllm:cache_config_info`
/// (summed over data-parallel engines).
pub fn load_metrics() -> LoadMetrics {
    LoadMetrics {
        running: vec!["vllm:num_requests_running".into()],
        waiting: vec!["vllm:num_requests_waiting".into()],
        kv_usage: vec![
            "vllm:kv_cache_usage_perc".into(),
            "vllm:gpu_cache_usage_perc".into(),
        ],
        kv_usage_scale: 1.0,
        kv_capacity: vec![KvCapacity::BlockLabels {
            metric: "vllm:cache_config_info".into(),
            blocks: "num_gpu_blocks".into(),
            block_size: "block_size".into(),
        }],
    }
}

/// One `vllm serve` process, by its base URL; cheap to clone.
///
/// ```
/// use dynamo_vllm::VllmServer;
///
/// let server = VllmServer::new("http://127.0.0.1:8000")?.model("served-name");
/// assert_eq!(server.url(), "http://127.0.0.1:8000");
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct VllmServer {
    /// The engine, which holds the client, the served model name and the default
    /// `max_tokens`: [`engine`](Self::engine) hands out clones of it.
    engine: CompletionsEngine,
}

impl VllmServer {
    /// The server at `url` (`http://host:port`), with default connection settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `url` is not an `http://` URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        VllmServer::with_http(url, HttpConfig::default())
    }

    /// The server at `url`, connected as `http` says (for example with its `--api-key`).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_http(url: &str, http: HttpConfig) -> Result<Self, Error> {
        Ok(VllmServer {
            engine: CompletionsEngine::new(HttpClient::new(url, http)?, dialect()),
        })
    }

    /// The name the server serves its model under (`--served-model-name`); without it each
    /// request's own model name is sent.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.engine = self.engine.model(model);
        self
    }

    /// The `max_tokens` sent for requests that set none (recent vLLM would otherwise stop at
    /// OpenAI's default of 16).
    pub fn default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.engine = self.engine.default_max_tokens(max_tokens);
        self
    }

    /// Tokenize the answer's text with `codec` (the gateway's tokenizer) when the server
    /// returns no `token_ids`: vLLM before 0.10.2 has no `return_token_ids` (it ignores the
    /// field and answers in text), and neither has a server that only looks like vLLM. The
    /// ids are then the gateway's reading of the text, which may split a word differently
    /// from the model; a warning is logged the first time. Without it such an answer is an
    /// `internal` error.
    pub fn text_codec(mut self, codec: Arc<dyn TextCodec>) -> Self {
        self.engine = self
            .engine
            .output(OutputTokens::TokenIdsOrRetokenize(codec));
        self
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        self.engine.client().base_url()
    }

    /// The engine that sends requests to this server.
    pub fn engine(&self) -> CompletionsEngine {
        self.engine.clone()
    }

    /// A poller of this server's `/metrics` (every second, stale after 5 s; change both on the
    /// poller).
    pub fn load_poller(&self) -> MetricsPoller {
        MetricsPoller::new(self.engine.client().clone(), load_metrics())
    }

    /// The KV events this server publishes at `endpoint` (its `--kv-events-config` endpoint,
    /// `tcp://host:5557` by default), as `worker`'s, with blocks of `block_size` tokens (the
    /// server's `--block-size`; a mismatch is refused by the index, never a silent miss).
    /// Add `with_replay` with its `replay_endpoint` to recover lost messages.
    #[cfg(feature = "events")]
    pub fn kv_events(
        &self,
        endpoint: impl Into<String>,
        worker: dynamo_core::WorkerId,
        block_size: dynamo_core::BlockSize,
    ) -> dynamo_transport::engine_events::EngineEventSource {
        dynamo_transport::engine_events::EngineEventSource::new(endpoint, worker, block_size)
    }
}
