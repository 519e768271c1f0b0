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
        series: None,
    }
}

/// The header that pins a request to one of a server's data-parallel engines
/// (`vllm/entrypoints/openai/api_server.py`; SGLang honours it too).
pub const DATA_PARALLEL_RANK_HEADER: &str = "x-data-parallel-rank";

/// The label of vLLM's metrics that names the data-parallel engine a series is of (its rank),
/// for [`MetricsPoller::start_per_series`] and [`LoadMetrics::series`].
pub const ENGINE_LABEL: &str = "engine";

/// One `vllm serve` process, by its base URL; cheap to clone.
///
/// A server started with `--data-parallel-size N` runs N engines behind one URL, each with its
/// own KV cache, scheduler and KV event publisher. [`data_parallel_rank`](Self::data_parallel_rank)
/// speaks to one of them, so a router can treat each as a worker of its own.
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
    /// The engine, which holds the client (with the rank's header, for one engine), the served
    /// model name and the default `max_tokens`: [`engine`](Self::engine) hands out clones of it.
    engine: CompletionsEngine,
    /// The client without the rank's header, for `/metrics`.
    client: HttpClient,
    /// The data-parallel engine spoken to; `None`: the server chooses.
    rank: Option<u32>,
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
        let client = HttpClient::new(url, http)?;
        Ok(VllmServer {
            engine: CompletionsEngine::new(client.clone(), dialect()),
            client,
            rank: None,
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

    /// One of the server's data-parallel engines (`--data-parallel-size`, internal load
    /// balancing): its requests carry [`DATA_PARALLEL_RANK_HEADER`], so vLLM's API server
    /// hands them to engine `rank` rather than choosing; its load is that engine's series of
    /// `/metrics` (label `engine="RANK"`); its KV events come from the port vLLM gives that
    /// rank's publisher ([`rank_endpoint`](Self::rank_endpoint)). Each rank has a KV cache of
    /// its own, so a router routes to each as a worker (`WorkerId::with_dp_rank`).
    ///
    /// ```
    /// use dynamo_vllm::VllmServer;
    ///
    /// let server = VllmServer::new("http://127.0.0.1:8000")?;
    /// let rank_1 = server.clone().data_parallel_rank(1)?;
    /// assert_eq!(rank_1.rank_endpoint("tcp://10.0.0.7:5557")?, "tcp://10.0.0.7:5558");
    /// assert_eq!(server.rank_endpoint("tcp://10.0.0.7:5557")?, "tcp://10.0.0.7:5557");
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// None in practice (a number is always a header value); the `Result` is the header's.
    pub fn data_parallel_rank(mut self, rank: u32) -> Result<Self, Error> {
        let client = self
            .client
            .header(DATA_PARALLEL_RANK_HEADER, &rank.to_string())?;
        self.engine = self.engine.with_client(client);
        self.rank = Some(rank);
        Ok(self)
    }

    /// The data-parallel engine this handle speaks to, if one was chosen.
    pub fn rank(&self) -> Option<u32> {
        self.rank
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        self.client.base_url()
    }

    /// The engine that sends requests to this server (to its data-parallel engine, when one
    /// was chosen).
    pub fn engine(&self) -> CompletionsEngine {
        self.engine.clone()
    }

    /// A poller of this server's `/metrics` (every second, stale after 5 s; change both on the
    /// poller): the whole server's load, or one data-parallel engine's. To follow every engine
    /// of a server with one scrape an interval, start the whole server's poller with
    /// [`MetricsPoller::start_per_series`] over [`ENGINE_LABEL`].
    pub fn load_poller(&self) -> MetricsPoller {
        let mut metrics = load_metrics();
        metrics.series = self
            .rank
            .map(|rank| (ENGINE_LABEL.to_owned(), rank.to_string()));
        MetricsPoller::new(self.client.clone(), metrics)
    }

    /// Where this handle's data-parallel engine binds a ZMQ socket that vLLM's configuration
    /// puts at `endpoint` (`--kv-events-config`'s `endpoint` or `replay_endpoint`): vLLM adds
    /// the rank to a `tcp://` port and appends `_dp{rank}` to an `ipc://` or `inproc://`
    /// path. Rank 0, or no rank, keeps `endpoint` as it is.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `endpoint` is neither `tcp://HOST:PORT` nor an `ipc://`
    /// or `inproc://` path, or the rank's port would pass 65535.
    pub fn rank_endpoint(&self, endpoint: &str) -> Result<String, Error> {
        let rank = match self.rank {
            None | Some(0) => return Ok(endpoint.to_owned()),
            Some(rank) => rank,
        };
        if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
            return Ok(format!("{endpoint}_dp{rank}"));
        }
        let port = endpoint
            .strip_prefix("tcp://")
            .and_then(|address| address.rsplit_once(':'))
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
        let Some((host, port)) = port else {
            return Err(Error::invalid_request(format!(
                "{endpoint:?} is not tcp://HOST:PORT, ipc://PATH or inproc://NAME"
            )));
        };
        let port = u16::try_from(u32::from(port) + rank).map_err(|_| {
            Error::invalid_request(format!("{endpoint:?} + rank {rank} passes port 65535"))
        })?;
        Ok(format!("tcp://{host}:{port}"))
    }

    /// The KV events this server publishes at `endpoint` (its `--kv-events-config` endpoint,
    /// `tcp://host:5557` by default; for a data-parallel engine, that engine's:
    /// [`rank_endpoint`](Self::rank_endpoint)), as `worker`'s, with blocks of `block_size`
    /// tokens (the server's `--block-size`; a mismatch is refused by the index, never a silent
    /// miss). Add `with_replay` with its `replay_endpoint` (through `rank_endpoint` too) to
    /// recover lost messages.
    ///
    /// # Errors
    ///
    /// As [`rank_endpoint`](Self::rank_endpoint).
    #[cfg(feature = "events")]
    pub fn kv_events(
        &self,
        endpoint: &str,
        worker: dynamo_core::WorkerId,
        block_size: dynamo_core::BlockSize,
    ) -> Result<dynamo_transport::engine_events::EngineEventSource, Error> {
        let endpoint = self.rank_endpoint(endpoint)?;
        Ok(dynamo_transport::engine_events::EngineEventSource::new(
            endpoint, worker, block_size,
        ))
    }
}
