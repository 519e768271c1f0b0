//! One `trtllm-serve` process: its engine, its load and its KV events.

use dynamo_core::{BlockSize, Error, WorkerId};
use dynamo_upstream::{
    CompletionsEngine, Dialect, EngineLoad, Extensions, FormatField, HttpClient, HttpConfig,
    MetricsPoller, OutputTokens,
};
use serde_json::Value;

use crate::KvEventPoller;

/// How `trtllm-serve`'s `/v1/completions` is spoken to: the extension fields its
/// `CompletionRequest` defines, ids asked for with `"detokenize": false`, log-probabilities
/// as `"logprobs": 1` with each chosen token's score read beside its id (the server writes
/// tokens and alternatives as text, so alternatives are refused), an output format as
/// `response_format` in its own form (`{"type": "json_object"}`, `{"type": "json", "schema":
/// …}`, `{"type": "regex", "regex": …}` for a regular expression or a choice), which the server
/// enforces when it runs with a `guided_decoding_backend`.
pub fn dialect() -> Dialect {
    Dialect::openai()
        .named("TensorRT-LLM")
        .extensions(Extensions {
            top_k: true,
            min_p: true,
            repetition_penalty: true,
            stop_token_ids: true,
            ignore_eos: true,
            min_tokens: true,
            chosen_logprobs: true,
            response_format: FormatField::JsonWithSchema,
            ..Extensions::default()
        })
        .output(OutputTokens::TokenIdsField)
        .token_ids_request("detokenize", Value::Bool(false))
}

/// The load in `trtllm-serve`'s `/metrics` answer, a JSON list of iteration statistics: the
/// last entry's `numActiveRequests` (running), `numQueuedRequests` (waiting) and
/// `kvCacheStats.usedNumBlocks / maxNumBlocks`, and the cache's size in tokens,
/// `maxNumBlocks · tokensPerBlock`. An empty list (no iteration since the last read: the
/// server is idle) is no load.
///
/// # Errors
///
/// [`Error::Internal`] when the body is not a JSON list.
///
/// ```
/// let body = br#"[{"iter": 7, "numActiveRequests": 3, "numQueuedRequests": 1,
///                  "kvCacheStats": {"maxNumBlocks": 100, "usedNumBlocks": 25, "tokensPerBlock": 32}}]"#;
/// let load = dynamo_trtllm::read_iteration_stats(body)?;
/// assert_eq!((load.running_requests, load.waiting_requests), (3.0, 1.0));
/// assert_eq!(load.kv_cache_usage, Some(0.25));
/// assert_eq!(load.kv_capacity_tokens, Some(3200));
/// # Ok::<(), dynamo_core::Error>(())
/// ```
pub fn read_iteration_stats(body: &[u8]) -> Result<EngineLoad, Error> {
    let stats: Vec<Value> = serde_json::from_slice(body).map_err(|error| {
        Error::internal("the iteration statistics are not a JSON list").with_source(error)
    })?;
    let number = |stat: &Value, key: &str| stat.get(key).and_then(Value::as_f64);
    let (running, waiting, kv, capacity) = match stats.last() {
        Some(last) => {
            let stats = last.get("kvCacheStats");
            let kv = stats.and_then(|kv| {
                let max = number(kv, "maxNumBlocks").filter(|max| *max > 0.0)?;
                Some((number(kv, "usedNumBlocks")? / max).clamp(0.0, 1.0))
            });
            let capacity = stats.and_then(|kv| {
                let blocks = kv.get("maxNumBlocks")?.as_u64()?;
                let tokens = kv.get("tokensPerBlock")?.as_u64()?;
                blocks.checked_mul(tokens).filter(|&tokens| tokens > 0)
            });
            (
                number(last, "numActiveRequests").unwrap_or(0.0),
                number(last, "numQueuedRequests").unwrap_or(0.0),
                kv,
                capacity,
            )
        }
        None => (0.0, 0.0, None, None),
    };
    Ok(EngineLoad {
        running_requests: running,
        waiting_requests: waiting,
        kv_cache_usage: kv,
        kv_capacity_tokens: capacity,
        scraped_at: tokio::time::Instant::now(),
    })
}

/// One `trtllm-serve` process, by its base URL; cheap to clone.
///
/// ```
/// use dynamo_trtllm::TrtllmServer;
///
/// let server = TrtllmServer::new("http://127.0.0.1:8000")?.model("llama");
/// assert_eq!(server.url(), "http://127.0.0.1:8000");
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TrtllmServer {
    /// The engine, which holds the client, the served model name and the default
    /// `max_tokens`: [`engine`](Self::engine) hands out clones of it.
    engine: CompletionsEngine,
}

impl TrtllmServer {
    /// The server at `url` (`http://host:port`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `url` is not an `http://` URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(TrtllmServer {
            engine: CompletionsEngine::new(HttpClient::new(url, HttpConfig::default())?, dialect()),
        })
    }

    /// The model name the server expects in `model`; without it the request's is sent.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.engine = self.engine.model(model);
        self
    }

    /// The `max_tokens` sent for requests that set none.
    pub fn default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.engine = self.engine.default_max_tokens(max_tokens);
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

    /// A poller of this server's `/metrics` iteration statistics. Each read drains the
    /// statistics the server buffered since the last one, so run one poller per server.
    pub fn load_poller(&self) -> MetricsPoller {
        MetricsPoller::with_reader(
            self.engine.client().clone(),
            "/metrics",
            read_iteration_stats,
        )
    }

    /// A poller of this server's KV events (`POST /kv_cache_events`) for `worker`, whose
    /// blocks must be `block_size` tokens (the server's `tokens_per_block`). Each poll drains
    /// the events the server buffered, so run one poller per server.
    pub fn kv_event_poller(&self, worker: WorkerId, block_size: BlockSize) -> KvEventPoller {
        KvEventPoller::new(self.engine.client().clone(), worker, block_size)
    }
}
