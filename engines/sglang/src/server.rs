//! One SGLang server: its engine, its load and its KV events.

use dynamo_core::Error;
use dynamo_upstream::{HttpClient, HttpConfig, KvCapacity, LoadMetrics, MetricsPoller};

use crate::engine::SglangEngine;

/// SGLang's load gauges (`python/sglang/srt/metrics/collector.py`, served with
/// `--enable-metrics`): running requests, queued requests, `token_usage`, the fraction of KV
/// cache tokens in use, and `max_total_num_tokens`, the cache's size in tokens (summed over
/// data-parallel ranks).
pub fn load_metrics() -> LoadMetrics {
    LoadMetrics {
        running: vec!["sglang:num_running_reqs".into()],
        waiting: vec!["sglang:num_queue_reqs".into()],
        kv_usage: vec!["sglang:token_usage".into()],
        kv_usage_scale: 1.0,
        kv_capacity: vec![KvCapacity::Tokens("sglang:max_total_num_tokens".into())],
        series: None,
    }
}

/// One `sglang.launch_server` process, by its base URL; cheap to clone.
///
/// ```
/// use dynamo_sglang::SglangServer;
///
/// let server = SglangServer::new("http://127.0.0.1:30000")?;
/// assert_eq!(server.url(), "http://127.0.0.1:30000");
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SglangServer {
    client: HttpClient,
}

impl SglangServer {
    /// The server at `url` (`http://host:port`), with default connection settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `url` is not an `http://` URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        SglangServer::with_http(url, HttpConfig::default())
    }

    /// The server at `url`, connected as `http` says (for example with its `--api-key`).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_http(url: &str, http: HttpConfig) -> Result<Self, Error> {
        Ok(SglangServer {
            client: HttpClient::new(url, http)?,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        self.client.base_url()
    }

    /// The engine that sends requests to this server's `/generate`.
    pub fn engine(&self) -> SglangEngine {
        SglangEngine::new(self.client.clone())
    }

    /// A poller of this server's `/metrics` (started with `--enable-metrics`).
    pub fn load_poller(&self) -> MetricsPoller {
        MetricsPoller::new(self.client.clone(), load_metrics())
    }

    /// The KV events this server publishes at `endpoint` (its `--kv-events-config`
    /// endpoint), in vLLM's ZMQ layout, as `worker`'s, with blocks of `block_size` tokens (its
    /// `--page-size`).
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
