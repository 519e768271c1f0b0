//! `--engine-at`: engine servers the frontend routes to directly, beside the workers that
//! discovery reports: vLLM through `dynamo-vllm` and SGLang through `dynamo-sglang` (token
//! ids, their `/metrics` load, their ZMQ KV events; an older vLLM's text without ids tokenized
//! by the gateway's tokenizer), TensorRT-LLM through `dynamo-trtllm` (token ids, its
//! iteration statistics, its KV events polled from `/kv_cache_events`), any OpenAI-compatible
//! server through `dynamo-upstream` (its text tokenized by the gateway's tokenizer, its load
//! read from `/metrics` under llama.cpp's names when it exports them, routed with the
//! approximate index or by load).

use std::sync::Arc;
use std::time::Duration;

use dynamo_core::{BlockSize, BoxError, Token, WorkerId};
use dynamo_openai::{GgufMetadata, Tokenizer, WorkerGauges};
use dynamo_router::{
    ApproxConfig, ApproxIndex, ExpectedTtft, RoundRobin, RouterService, SharedIndex,
};
use dynamo_sglang::SglangServer;
use dynamo_transport::engine_events::EngineEventSource;
use dynamo_transport::events::EventPlane;
use dynamo_trtllm::{EventsError, TrtllmServer};
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, HttpClient, HttpConfig, LoadMetrics, LoadView,
    MetricsPoller, OutputTokens, TextCodec,
};
use dynamo_vllm::{ENGINE_LABEL, VllmServer};

use crate::options::{EngineAt, Options, RouterKind, UpstreamKind};

mod event_metrics;
mod reported_load;

use event_metrics::{export_restarts, export_skipped, logged, trtllm_skips, zmq_skips};
pub(crate) use reported_load::ReportedLoads;
use reported_load::reported_load;

/// Worker ids of `--engine-at` servers without `id=` start here (then count by position), far
/// from the small ids of `--worker-at` and clear of nothing else in particular: give `id=` when
/// discovery's ids could collide.
const FIRST_ID: u64 = 1_000_000;

/// How often each server's `/metrics` is read, and how long a reading is trusted.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
const SCRAPE_STALENESS: Duration = Duration::from_secs(5);

/// A router of the kind `--router` names, as `deploy::start_router` builds it (its KV index
/// `index` when given, the other pool's, else a new one, returned), except that engine
/// servers' ZMQ events can feed the index too (NATS events feed it when there is a plane), and
/// that `loads` tells it what each engine server reports of its load (which its busy
/// thresholds, its policy and its canaries read).
///
/// With `share_on` (a plane and the pool's name), the router shares its state (its load
/// bookings, and in approximate mode its predictions) with the other frontends' routers of its
/// pool there, as `deploy::start_shared_router`'s does: frontends behind one load balancer in
/// front of the same engine servers (each named by the same id in every frontend) route on
/// each other's requests too.
pub(crate) async fn start_router<P: EventPlane>(
    options: &Options,
    plane: Option<&P>,
    share_on: Option<(&P, &'static str)>,
    loads: &ReportedLoads,
    index: Option<SharedIndex>,
) -> Result<(RouterService, Option<SharedIndex>), Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    let replica = crate::share::replica(options, share_on.map(|(_, pool)| pool));
    let builder = crate::deploy::busy_router(options, options.health())?;
    let builder = crate::share::book_on(builder, replica.as_ref());
    let policy = ExpectedTtft::default();
    let (router, index) = match options.router {
        RouterKind::Kv => {
            let index = match (index, plane) {
                (Some(index), _) => index,
                (None, Some(plane)) => crate::deploy::events_index(plane, block_size).await?,
                (None, None) => {
                    let index = SharedIndex::new(block_size);
                    // The gauge the main job keeps too: the blocks the index says each server
                    // holds.
                    tokio::spawn(crate::deploy::report_index_sizes(index.clone()));
                    index
                }
            };
            let builder = builder.policy(policy).kv_events(index.clone());
            (builder.build(), Some(index))
        }
        RouterKind::ApproxKv => {
            let index = ApproxIndex::new(block_size, ApproxConfig::default());
            let builder = builder.policy(policy);
            let builder = crate::share::approximate(builder, replica.as_ref(), index);
            (builder.build(), None)
        }
        RouterKind::RoundRobin => (builder.policy(RoundRobin::new()).build(), None),
    };
    if let (Some(replica), Some((plane, _))) = (replica, share_on) {
        crate::share::share(plane, replica, router.clone()).await?;
    }
    tokio::spawn(router.health_checks());
    loads.tell(router.clone());
    Ok((router, index))
}

/// Add every `--engine-at` server to `router` as a worker, with its KV events into `index`
/// (when the router routes on events) and its load polled into the gateway's metrics and into
/// `loads`, which tells the routers.
pub(crate) async fn attach(
    options: &Options,
    metadata: &GgufMetadata,
    router: &RouterService,
    index: Option<&SharedIndex>,
    loads: &ReportedLoads,
) -> Result<(), Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    // The gateway's tokenizer, for servers that answer in text; built once, when first needed.
    let mut tokenizer: Option<Arc<dyn TextCodec>> = None;
    let mut codec = || -> Result<Arc<dyn TextCodec>, Box<dyn std::error::Error>> {
        if let Some(codec) = &tokenizer {
            return Ok(Arc::clone(codec));
        }
        let codec: Arc<dyn TextCodec> = Arc::new(GatewayTokenizer(Tokenizer::from_gguf(metadata)?));
        tokenizer = Some(Arc::clone(&codec));
        Ok(codec)
    };
    for (place, engine_at) in options.engine_at.iter().enumerate() {
        let worker = WorkerId::new(engine_at.id.unwrap_or(FIRST_ID + place as u64));
        let model = engine_at
            .model
            .clone()
            .unwrap_or_else(|| options.name.clone());
        match engine_at.kind {
            UpstreamKind::Vllm => {
                // An older vLLM (before 0.10.2) answers without token ids: its text is
                // tokenized by the gateway's tokenizer, with a warning.
                let server = VllmServer::new(&engine_at.url)?
                    .model(model)
                    .default_max_tokens(options.default_max_tokens)
                    .text_codec(codec()?);
                let capacity = (router, block_size);
                let shared = (index, loads);
                match engine_at.data_parallel_size {
                    None => {
                        let (view, poll) = scraped(server.load_poller()).start();
                        tokio::spawn(poll);
                        follow_vllm(&server, worker, view, engine_at, capacity, shared)?;
                    }
                    Some(size) => {
                        attach_engines(&server, size, engine_at, (worker, capacity), shared)?
                    }
                }
            }
            UpstreamKind::Sglang => {
                let server = SglangServer::new(&engine_at.url)?;
                router.insert_worker(worker, server.engine());
                poll_load(worker, server.load_poller(), loads, (router, block_size));
                if let Some(events) = &engine_at.events {
                    let source = server.kv_events(events.clone(), worker, block_size);
                    subscribe_events(source, engine_at.replay.clone(), worker, index)?;
                }
            }
            UpstreamKind::Trtllm => {
                let server = TrtllmServer::new(&engine_at.url)?
                    .model(model)
                    .default_max_tokens(options.default_max_tokens);
                router.insert_worker(worker, server.engine());
                poll_load(worker, server.load_poller(), loads, (router, block_size));
                if let Some(interval) = engine_at.poll {
                    poll_events(&server, interval, worker, (index, block_size));
                }
            }
            UpstreamKind::Openai => {
                let client = HttpClient::new(&engine_at.url, HttpConfig::default())?;
                let dialect = Dialect::openai()
                    .extensions(Extensions {
                        response_format: engine_at.format,
                        ..Extensions::default()
                    })
                    .output(OutputTokens::Retokenize(codec()?));
                let poller = MetricsPoller::new(client.clone(), llama_cpp_metrics());
                let engine = CompletionsEngine::new(client, dialect)
                    .model(model)
                    .default_max_tokens(options.default_max_tokens);
                router.insert_worker(worker, engine);
                poll_load(worker, poller, loads, (router, block_size));
            }
        }
        tracing::info!(
            %worker,
            url = engine_at.url,
            kind = engine_at.kind.describe(),
            events = engine_at.events.as_deref().unwrap_or("none"),
            data_parallel_size = engine_at.data_parallel_size,
            "routing to an engine server"
        );
    }
    Ok(())
}

/// Add each of the `size` data-parallel engines of a vLLM `server` to `router` as a worker of
/// its own (`worker`'s id, the engine's rank), with its KV events; one scrape of the server's
/// metrics an interval gives every engine's load.
fn attach_engines(
    server: &VllmServer,
    size: u32,
    engine_at: &EngineAt,
    (worker, capacity): (WorkerId, (&RouterService, BlockSize)),
    shared: (Option<&SharedIndex>, &ReportedLoads),
) -> Result<(), Box<dyn std::error::Error>> {
    let ranks: Vec<String> = (0..size).map(|rank| rank.to_string()).collect();
    let ranks: Vec<&str> = ranks.iter().map(String::as_str).collect();
    let (views, poll) = scraped(server.load_poller()).start_per_series(ENGINE_LABEL, &ranks);
    tokio::spawn(poll);
    for (rank, view) in (0..size).zip(views) {
        let engine = server.clone().data_parallel_rank(rank)?;
        follow_vllm(
            &engine,
            worker.with_dp_rank(rank),
            view,
            engine_at,
            capacity,
            shared,
        )?;
    }
    Ok(())
}

/// Route to a vLLM server (or one of its data-parallel engines) as `worker`: its load as `view`
/// reads it, its KV events (and their replay) from where it publishes them.
fn follow_vllm(
    server: &VllmServer,
    worker: WorkerId,
    view: LoadView,
    engine_at: &EngineAt,
    (router, block_size): (&RouterService, BlockSize),
    (index, loads): (Option<&SharedIndex>, &ReportedLoads),
) -> Result<(), Box<dyn std::error::Error>> {
    router.insert_worker(worker, server.engine());
    record_load_of(worker, view, loads, (router, block_size));
    if let Some(events) = &engine_at.events {
        let source = server.kv_events(events, worker, block_size)?;
        let replay = engine_at.replay.as_deref();
        let replay = replay.map(|at| server.rank_endpoint(at)).transpose()?;
        subscribe_events(source, replay, worker, index)?;
    }
    Ok(())
}

/// Follow `source` (and its replay socket at `replay`) into `index`, when the router routes
/// on events.
fn subscribe_events(
    mut source: EngineEventSource,
    replay: Option<String>,
    worker: WorkerId,
    index: Option<&SharedIndex>,
) -> Result<(), Box<dyn std::error::Error>> {
    let Some(index) = index else {
        tracing::warn!(%worker, "events= is ignored: --router is not kv");
        return Ok(());
    };
    if let Some(replay) = replay {
        source = source.with_replay(replay);
    }
    let events = source.subscribe()?;
    tokio::spawn(export_skipped(worker, events.counts_view(), zmq_skips));
    tokio::spawn(export_restarts(worker, events.counts_view()));
    tokio::spawn(index.apply_all(logged(worker, events, dynamo_transport::Error::name)));
    Ok(())
}

/// Poll a TensorRT-LLM server's KV events every `interval` into `index` (when the router
/// routes on events).
fn poll_events(
    server: &TrtllmServer,
    interval: Duration,
    worker: WorkerId,
    (index, block_size): (Option<&SharedIndex>, BlockSize),
) {
    let Some(index) = index else {
        tracing::warn!(%worker, "events= is ignored: --router is not kv");
        return;
    };
    let (events, poll) = server
        .kv_event_poller(worker, block_size)
        .interval(interval)
        .start();
    tokio::spawn(poll);
    tokio::spawn(export_skipped(worker, events.counts_view(), trtllm_skips));
    tokio::spawn(index.apply_all(logged(worker, events, EventsError::name)));
}

/// Poll a server's load with `poller`, into `loads`, the gateway's metrics and, where the
/// server tells its KV cache's size, `router`'s load (in its blocks).
fn poll_load(
    worker: WorkerId,
    poller: MetricsPoller,
    loads: &ReportedLoads,
    capacity: (&RouterService, BlockSize),
) {
    let (view, poll) = scraped(poller).start();
    tokio::spawn(poll);
    record_load_of(worker, view, loads, capacity);
}

/// `poller` at the frontend's interval and staleness limit.
fn scraped(poller: MetricsPoller) -> MetricsPoller {
    poller.interval(SCRAPE_INTERVAL).staleness(SCRAPE_STALENESS)
}

/// Record each reading of `view` as `worker`'s load, into `loads`, the gateway's metrics and
/// `router`'s load.
fn record_load_of(
    worker: WorkerId,
    view: LoadView,
    loads: &ReportedLoads,
    (router, block_size): (&RouterService, BlockSize),
) {
    let capacity = (router.clone(), block_size);
    tokio::spawn(record_load(worker, view, loads.clone(), capacity));
}

/// An `openai` server's load, read as llama.cpp's server exports it (with `--metrics`): the
/// slots processing a request, and the requests deferred until one frees. Another server's
/// `/metrics` without these names gives no reading (as one that answers none).
fn llama_cpp_metrics() -> LoadMetrics {
    LoadMetrics {
        running: vec!["llamacpp:requests_processing".to_owned()],
        waiting: vec!["llamacpp:requests_deferred".to_owned()],
        kv_usage: Vec::new(),
        kv_usage_scale: 1.0,
        kv_capacity: Vec::new(),
        series: None,
    }
}

/// The series a fresh scrape sets, by worker. Kept in [`WorkerGauges`], not through the
/// `metrics` facade, so that they can leave `/metrics` while the scrape is stale.
const LOAD_SERIES: [&str; 3] = [
    "dynamo_engine_running_requests",
    "dynamo_engine_waiting_requests",
    "dynamo_engine_kv_cache_usage",
];

/// 1 while a server's last scrape is within the staleness limit, else 0 (before the first
/// scrape too), by worker: the series that stays while [`LOAD_SERIES`] leave.
const SCRAPED: &str = "dynamo_engine_metrics_up";

/// Keep an engine server's load in the router's reported loads and in the gateway's
/// Prometheus metrics, labelled by worker, while it is fresh: when the last scrape goes stale
/// both forget it (its series leave `/metrics`, [`SCRAPED`] turns 0), and the next good scrape
/// brings it back.
async fn record_load(
    worker: WorkerId,
    mut view: LoadView,
    loads: ReportedLoads,
    (router, block_size): (RouterService, BlockSize),
) {
    let label = worker.to_string();
    let gauges = WorkerGauges::global();
    gauges.set(SCRAPED, &label, 0.0);
    loop {
        // Wake at each scrape, or when the last one goes stale without a new one.
        let changed = tokio::time::timeout(SCRAPE_STALENESS, view.changed()).await;
        if changed == Ok(false) {
            loads.set(worker, None);
            hide_load(gauges, &label);
            return;
        }
        let Some(load) = view.current() else {
            loads.set(worker, None);
            hide_load(gauges, &label);
            continue;
        };
        loads.set(
            worker,
            Some(reported_load(&load, block_size, SCRAPE_STALENESS)),
        );
        if let Some(tokens) = load.kv_capacity_tokens {
            // The server's blocks may be of another size than the router's: counted in its.
            let blocks = tokens / u64::from(block_size.get());
            if router
                .selector()
                .load()
                .set_kv_capacity(worker, Some(blocks))
            {
                // Kept where the NATS load reports keep it (`load_metrics`), not in the
                // exporter: one family on `/metrics`.
                gauges.set(
                    "dynamo_router_worker_kv_capacity_blocks",
                    &label,
                    blocks as f64,
                );
            }
        }
        let values = [
            load.running_requests,
            load.waiting_requests,
            load.kv_cache_usage.unwrap_or(f64::NAN),
        ];
        for (name, value) in LOAD_SERIES.into_iter().zip(values) {
            gauges.set(name, &label, value);
        }
        gauges.set(SCRAPED, &label, 1.0);
    }
}

/// Take a server's load series off `/metrics` (its KV capacity, a property of the server that
/// the router keeps routing with, stays) and mark it not scraped.
fn hide_load(gauges: &WorkerGauges, label: &str) {
    for name in LOAD_SERIES {
        gauges.remove_series(name, label);
    }
    gauges.set(SCRAPED, label, 0.0);
}

/// The gateway's tokenizer, for servers that answer in text.
struct GatewayTokenizer(Tokenizer);

impl TextCodec for GatewayTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<Token>, BoxError> {
        Ok(self.0.encode(text)?)
    }

    fn decode(&self, tokens: &[Token]) -> Result<String, BoxError> {
        Ok(self.0.decode(tokens, false)?)
    }
}
