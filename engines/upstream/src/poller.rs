//! A server's load, read from its Prometheus `/metrics` at an interval and kept fresh.

use std::future::Future;
use std::time::Duration;

use dynamo_core::Error;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::{HttpClient, read_body};
use crate::metrics::{Sample, samples};
use crate::status::error_of_answer;

/// Which metrics hold the load figures. For each figure the first name found in a scrape is
/// used, summed over its label sets (data-parallel ranks, engines); the KV usage takes the
/// largest value instead. With [`series`](Self::series) set, only the series that carry that
/// label count (one data-parallel engine's).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadMetrics {
    /// Requests running in the engine's batch.
    pub running: Vec<String>,
    /// Requests queued in the engine.
    pub waiting: Vec<String>,
    /// KV cache usage.
    pub kv_usage: Vec<String>,
    /// Multiply the KV usage by this to get a fraction (1 for a fraction, 0.01 for percent).
    pub kv_usage_scale: f64,
    /// Where the KV cache's size is read; the first source found is used, summed over its
    /// series (data-parallel ranks, engines). Empty: the size is not read.
    pub kv_capacity: Vec<KvCapacity>,
    /// Only the series whose label (the first) has this value (the second), for every figure:
    /// `("engine", "1")` reads one of vLLM's data-parallel engines. `None`: every series.
    pub series: Option<(String, String)>,
}

impl LoadMetrics {
    /// Whether `sample` is one of the series these metrics read.
    fn reads(&self, sample: &Sample<'_>) -> bool {
        self.series
            .as_ref()
            .is_none_or(|(label, value)| sample.label(label).as_deref() == Some(value.as_str()))
    }
}

/// Where a server's `/metrics` tells its KV cache's size.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvCapacity {
    /// A gauge whose value is the size in tokens (SGLang's `sglang:max_total_num_tokens`).
    Tokens(String),
    /// An info metric whose labels give the number of blocks and the tokens a block holds
    /// (vLLM's `vllm:cache_config_info`, labels `num_gpu_blocks` and `block_size`). A series
    /// whose labels are not numbers (vLLM writes `None` before it has sized its cache) counts
    /// as none.
    BlockLabels {
        /// The metric's name.
        metric: String,
        /// The label holding the number of blocks.
        blocks: String,
        /// The label holding the tokens per block.
        block_size: String,
    },
}

impl KvCapacity {
    /// The size in tokens this source finds in `text`, summed over its series.
    fn tokens(&self, text: &str, metrics: &LoadMetrics) -> Option<u64> {
        let sizes = samples(text)
            .filter(|sample| metrics.reads(sample))
            .filter_map(|sample| match self {
                KvCapacity::Tokens(name) => {
                    (sample.name == name && sample.value.is_finite() && sample.value >= 1.0)
                        .then_some(sample.value as u64)
                }
                KvCapacity::BlockLabels {
                    metric,
                    blocks,
                    block_size,
                } => {
                    let number = |label: &str| sample.label(label)?.parse::<u64>().ok();
                    (sample.name == metric)
                        .then(|| number(blocks)?.checked_mul(number(block_size)?))
                        .flatten()
                }
            });
        sizes
            .reduce(u64::saturating_add)
            .filter(|tokens| *tokens > 0)
    }
}

/// How a scrape's body becomes a load.
#[derive(Debug, Clone)]
enum Reader {
    Prometheus(LoadMetrics),
    Custom(fn(&[u8]) -> Result<EngineLoad, Error>),
}

impl Reader {
    fn read(&self, body: &[u8]) -> Result<EngineLoad, Error> {
        match self {
            Reader::Prometheus(metrics) => {
                EngineLoad::from_text(&String::from_utf8_lossy(body), metrics)
            }
            Reader::Custom(read) => read(body),
        }
    }
}

/// The load one scrape found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLoad {
    /// Requests running.
    pub running_requests: f64,
    /// Requests waiting.
    pub waiting_requests: f64,
    /// KV cache usage as a fraction in `[0, 1]`, when the server exports it.
    pub kv_cache_usage: Option<f64>,
    /// The KV cache's size in tokens, when the server exports it: from Prometheus metrics as
    /// [`LoadMetrics::kv_capacity`] says (vLLM's and SGLang's), or from TensorRT-LLM's
    /// iteration statistics.
    pub kv_capacity_tokens: Option<u64>,
    /// When the scrape answered.
    pub scraped_at: Instant,
}

impl EngineLoad {
    /// The load in a `/metrics` text, read as `metrics` says.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] when neither the running nor the waiting figure is in the text.
    ///
    /// ```
    /// use dynamo_upstream::{EngineLoad, KvCapacity, LoadMetrics};
    ///
    /// let metrics = LoadMetrics {
    ///     running: vec!["vllm:num_requests_running".into()],
    ///     waiting: vec!["vllm:num_requests_waiting".into()],
    ///     kv_usage: vec!["vllm:kv_cache_usage_perc".into()],
    ///     kv_usage_scale: 1.0,
    ///     kv_capacity: vec![KvCapacity::BlockLabels {
    ///         metric: "vllm:cache_config_info".into(),
    ///         blocks: "num_gpu_blocks".into(),
    ///         block_size: "block_size".into(),
    ///     }],
    ///     series: None,
    /// };
    /// let text = "vllm:num_requests_running{engine=\"0\"} 2\nvllm:num_requests_running{engine=\"1\"} 1\n\
    ///             vllm:num_requests_waiting{engine=\"0\"} 4\nvllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n\
    ///             vllm:cache_config_info{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"1000\"} 1.0\n";
    /// let load = EngineLoad::from_text(text, &metrics)?;
    /// assert_eq!((load.running_requests, load.waiting_requests), (3.0, 4.0));
    /// assert_eq!(load.kv_cache_usage, Some(0.5));
    /// assert_eq!(load.kv_capacity_tokens, Some(16_000));
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    pub fn from_text(text: &str, metrics: &LoadMetrics) -> Result<Self, Error> {
        let running = first_found(text, metrics, &metrics.running, |a, b| a + b);
        let waiting = first_found(text, metrics, &metrics.waiting, |a, b| a + b);
        let kv = first_found(text, metrics, &metrics.kv_usage, f64::max);
        if running.is_none() && waiting.is_none() {
            return Err(Error::internal(format!(
                "the metrics name none of {:?} or {:?}",
                metrics.running, metrics.waiting
            )));
        }
        Ok(EngineLoad {
            running_requests: running.unwrap_or(0.0),
            waiting_requests: waiting.unwrap_or(0.0),
            kv_cache_usage: kv.map(|usage| (usage * metrics.kv_usage_scale).clamp(0.0, 1.0)),
            kv_capacity_tokens: metrics
                .kv_capacity
                .iter()
                .find_map(|source| source.tokens(text, metrics)),
            scraped_at: Instant::now(),
        })
    }
}

/// The value of the first of `names` present in `text` among the series `metrics` reads, its
/// series combined with `combine`.
fn first_found(
    text: &str,
    metrics: &LoadMetrics,
    names: &[String],
    combine: fn(f64, f64) -> f64,
) -> Option<f64> {
    names.iter().find_map(|name| {
        samples(text)
            .filter(|sample| sample.name == name && sample.value.is_finite())
            .filter(|sample| metrics.reads(sample))
            .map(|sample| sample.value)
            .reduce(combine)
    })
}

/// The latest load of one server, as its poller last read it; cheap to clone.
#[derive(Debug, Clone)]
pub struct LoadView {
    latest: watch::Receiver<Option<EngineLoad>>,
    staleness: Duration,
}

impl LoadView {
    /// The latest load, unless it is older than the staleness limit (the server stopped
    /// answering its metrics) or there is none yet.
    pub fn current(&self) -> Option<EngineLoad> {
        let load = (*self.latest.borrow())?;
        (load.scraped_at.elapsed() <= self.staleness).then_some(load)
    }

    /// The latest load, however old.
    pub fn last(&self) -> Option<EngineLoad> {
        *self.latest.borrow()
    }

    /// Wait until the next scrape lands (or the poller stops, returning `false`).
    pub async fn changed(&mut self) -> bool {
        self.latest.changed().await.is_ok()
    }
}

/// Reads a server's `/metrics` at an interval, one scrape at a time, each bounded in time and
/// size; a failed scrape keeps the last load, which goes stale after the limit.
///
/// ```no_run
/// use std::time::Duration;
/// use dynamo_upstream::{HttpClient, HttpConfig, LoadMetrics, MetricsPoller};
///
/// # async fn run(metrics: LoadMetrics) -> Result<(), dynamo_core::Error> {
/// let client = HttpClient::new("http://127.0.0.1:8000", HttpConfig::default())?;
/// let (view, poll) = MetricsPoller::new(client, metrics)
///     .interval(Duration::from_millis(500))
///     .staleness(Duration::from_secs(3))
///     .start();
/// tokio::spawn(poll); // ends when every view is dropped
/// if let Some(load) = view.current() {
///     tracing::info!(waiting = load.waiting_requests, "engine load");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MetricsPoller {
    client: HttpClient,
    reader: Reader,
    path: String,
    interval: Duration,
    staleness: Duration,
    max_body: usize,
}

impl MetricsPoller {
    /// A poller of `client`'s `/metrics`, every second, stale after 5 s, bodies up to 4 MiB.
    pub fn new(client: HttpClient, metrics: LoadMetrics) -> Self {
        MetricsPoller {
            client,
            reader: Reader::Prometheus(metrics),
            path: "/metrics".to_owned(),
            interval: Duration::from_secs(1),
            staleness: Duration::from_secs(5),
            max_body: 4 << 20,
        }
    }

    /// A poller of `client`'s `path` whose body `read` turns into a load, for servers whose
    /// metrics are not Prometheus text (TensorRT-LLM's JSON iteration statistics).
    pub fn with_reader(
        client: HttpClient,
        path: impl Into<String>,
        read: fn(&[u8]) -> Result<EngineLoad, Error>,
    ) -> Self {
        MetricsPoller {
            client,
            reader: Reader::Custom(read),
            path: path.into(),
            interval: Duration::from_secs(1),
            staleness: Duration::from_secs(5),
            max_body: 4 << 20,
        }
    }

    /// Scrape this path instead of `/metrics`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Scrape this often (each scrape may take at most this long).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Trust a load for at most this long after its scrape.
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// Read one scrape now.
    ///
    /// # Errors
    ///
    /// The server's error class when it answers with an error status, `unavailable` when it
    /// cannot be reached, `internal` when the body is too large or names no load figure.
    pub async fn scrape(&self) -> Result<EngineLoad, Error> {
        let body = self.fetch().await?;
        self.reader.read(&body)
    }

    /// The body of one scrape.
    async fn fetch(&self) -> Result<bytes::Bytes, Error> {
        let response = self.client.get(&self.path).await?;
        let (head, body) = response.into_parts();
        let bytes = read_body(body, self.max_body).await?;
        if !head.status.is_success() {
            return Err(error_of_answer(head.status, &head.headers, &bytes));
        }
        Ok(bytes)
    }

    /// The view of the load, and the future that keeps it fresh: spawn it on your runtime;
    /// it ends when every [`LoadView`] has been dropped.
    pub fn start(self) -> (LoadView, impl Future<Output = ()> + Send + 'static) {
        let reader = self.reader.clone();
        let (mut views, poll) = self.start_readers(vec![reader]);
        let view = views.pop().expect("one view for the one reader");
        (view, poll)
    }

    /// One view for each of `values` of `label`, each the load of the series that carry that
    /// value (as [`LoadMetrics::series`] reads them), all kept fresh by one scrape: a vLLM
    /// server's data-parallel engines (label `engine`) share one `/metrics` page, read once
    /// an interval however many engines it has. A poller [`with_reader`](Self::with_reader)
    /// gives every view the whole reading. The future ends when every view has been dropped.
    ///
    /// ```no_run
    /// use dynamo_upstream::{HttpClient, HttpConfig, LoadMetrics, MetricsPoller};
    ///
    /// # async fn run(metrics: LoadMetrics) -> Result<(), dynamo_core::Error> {
    /// let client = HttpClient::new("http://127.0.0.1:8000", HttpConfig::default())?;
    /// let poller = MetricsPoller::new(client, metrics);
    /// let (engines, poll) = poller.start_per_series("engine", &["0", "1"]);
    /// tokio::spawn(poll);
    /// let loads = engines.iter().filter_map(|view| view.current());
    /// let waiting = loads.map(|load| load.waiting_requests);
    /// tracing::info!(most_waiting = waiting.fold(0.0, f64::max), "two engines");
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_per_series(
        self,
        label: &str,
        values: &[&str],
    ) -> (Vec<LoadView>, impl Future<Output = ()> + Send + 'static) {
        let readers = values
            .iter()
            .map(|value| match &self.reader {
                Reader::Prometheus(metrics) => Reader::Prometheus(LoadMetrics {
                    series: Some((label.to_owned(), (*value).to_owned())),
                    ..metrics.clone()
                }),
                Reader::Custom(read) => Reader::Custom(*read),
            })
            .collect();
        self.start_readers(readers)
    }

    /// A view for each of `readers`, all fed by one scrape an interval.
    fn start_readers(
        self,
        readers: Vec<Reader>,
    ) -> (Vec<LoadView>, impl Future<Output = ()> + Send + 'static) {
        let (senders, views): (Vec<_>, Vec<_>) = readers
            .iter()
            .map(|_| {
                let (sender, latest) = watch::channel(None);
                let view = LoadView {
                    latest,
                    staleness: self.staleness,
                };
                (sender, view)
            })
            .unzip();
        let poll = async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let all_dropped = futures::future::join_all(senders.iter().map(watch::Sender::closed));
            tokio::pin!(all_dropped);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut all_dropped => return,
                }
                let body = match tokio::time::timeout(self.interval, self.fetch()).await {
                    Ok(Ok(body)) => body,
                    Ok(Err(error)) => {
                        tracing::debug!(url = self.client.base_url(), %error, "metrics scrape failed");
                        continue;
                    }
                    Err(_elapsed) => {
                        tracing::debug!(url = self.client.base_url(), "metrics scrape timed out");
                        continue;
                    }
                };
                for (reader, sender) in readers.iter().zip(&senders) {
                    match reader.read(&body) {
                        Ok(load) => {
                            sender.send_replace(Some(load));
                        }
                        Err(error) => {
                            tracing::debug!(url = self.client.base_url(), %error, "no load in the metrics");
                        }
                    }
                }
            }
        };
        (views, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kv_capacity: Vec<KvCapacity>) -> LoadMetrics {
        LoadMetrics {
            running: vec!["running".into()],
            waiting: vec![],
            kv_usage: vec![],
            kv_usage_scale: 1.0,
            kv_capacity,
            series: None,
        }
    }

    fn vllm_info() -> KvCapacity {
        KvCapacity::BlockLabels {
            metric: "vllm:cache_config_info".into(),
            blocks: "num_gpu_blocks".into(),
            block_size: "block_size".into(),
        }
    }

    fn capacity(text: &str, sources: Vec<KvCapacity>) -> Option<u64> {
        let text = format!("running 1\n{text}");
        EngineLoad::from_text(&text, &with(sources))
            .expect("a load")
            .kv_capacity_tokens
    }

    #[test]
    fn a_cache_size_is_summed_over_engines_and_unknown_until_it_is_a_number() {
        let two_engines = "vllm:cache_config_info{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"100\"} 1.0\n\
                           vllm:cache_config_info{block_size=\"16\",engine=\"1\",num_gpu_blocks=\"50\"} 1.0\n";
        assert_eq!(capacity(two_engines, vec![vllm_info()]), Some(2_400));
        let not_sized_yet =
            "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"None\"} 1.0\n";
        assert_eq!(capacity(not_sized_yet, vec![vllm_info()]), None);
        let ranks = "sglang:max_total_num_tokens{tp_rank=\"0\"} 1000\n\
                     sglang:max_total_num_tokens{tp_rank=\"1\"} 24.0\n";
        let tokens = KvCapacity::Tokens("sglang:max_total_num_tokens".into());
        assert_eq!(capacity(ranks, vec![tokens.clone()]), Some(1_024));
        assert_eq!(
            capacity("sglang:max_total_num_tokens 0\n", vec![tokens.clone()]),
            None
        );
        // The first source found wins; none named or none given: unknown.
        assert_eq!(
            capacity(&format!("{two_engines}{ranks}"), vec![tokens, vllm_info()]),
            Some(1_024)
        );
        assert_eq!(capacity(two_engines, vec![]), None);
    }
}
