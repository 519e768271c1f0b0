//! The dynamo main job: an OpenAI-compatible gateway on 127.0.0.1:8000 that routes with
//! KV-aware routing across in-process workers, with embedded defaults and no external services;
//! or the same split into processes: `worker`s serving engines over TCP and a `frontend`,
//! joined by NATS (events) and etcd or a directory (discovery); and a `planner` that starts and
//! stops such workers as their load or the frontends' traffic asks (or, built with the `kube`
//! feature, scales the Kubernetes Deployments that run them: `--kubernetes-deployment NAME`).
//!
//! ```text
//! cargo run --release -p dynamo-serve [-- --port 8000 --workers 2 --model FILE.gguf]
//! cargo run --release -p dynamo-serve -- worker --etcd http://127.0.0.1:2379 --nats nats://127.0.0.1:4222
//! cargo run --release -p dynamo-serve -- frontend --etcd http://127.0.0.1:2379 --nats nats://127.0.0.1:4222
//! cargo run --release -p dynamo-serve -- planner --registry DIR --nats URL -- --engine mocker
//! cargo run --release -p dynamo-serve -- profile --out profile.json   # measure one worker
//! cargo run --release -p dynamo-serve -- openapi [FILE]   # write the OpenAPI document and exit
//! ```
//!
//! The model is SmolLM2-135M-Instruct, fetched once into the cache (see `dynamo-assets`): its
//! GGUF file gives the weights, the tokenizer and the chat template. Each worker is a
//! `dynamo-candle` engine running the model on the CPU with its own paged prefix cache, whose KV
//! events feed the router's index. `--engine mocker` puts simulated workers there instead, and
//! `--engine echo` instant ones (for overhead benches). Requests that give no temperature or
//! top_p are sampled as the model recommends (`--sampling-defaults`).
//!
//! `dynamo-serve --help` lists the single process's flags, and `dynamo-serve worker --help` and
//! `dynamo-serve frontend --help` their own (`options/`, parsed with clap). The welcome text
//! that says how to call the gateway goes to standard output; logs go to standard error
//! through `tracing`, filtered by `RUST_LOG` (default `info`). A model download shows a
//! progress bar when standard error is a terminal, and one log line when it is not.

mod deploy;
mod disagg;
mod embedding;
mod engines;
mod frontend;
mod kubernetes;
mod options;
mod planner;
mod profile;
mod progress;
mod response_store;
mod sampling;
mod share;
mod tls;
mod worker;

use std::io::IsTerminal;
use std::net::SocketAddr;

use dynamo_core::{BoxEngine, WorkerId};
use dynamo_openai::{ApiKeys, Gateway, GatewayConfig, GgufMetadata, ModelEntry, ModelRegistry};
use dynamo_transport::InProcess;
use dynamo_transport::discovery::StaticDiscovery;
use dynamo_transport::events::LocalBus;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use deploy::Pool;
use options::{Command, EngineKind, Options, RouterKind};

/// mimalloc: the gateway allocates many small short-lived buffers per request, and the system
/// allocator spent a fifth of the CPU time on them in the overhead bench (`docs/gateway.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    // clap prints its own errors (status 2) and `--help` (status 0).
    let options = Options::parse();
    init_logging();
    if let Err(error) = run(options).await {
        tracing::error!("{error}");
        std::process::exit(1);
    }
}

/// Log to standard error, filtered by `RUST_LOG` (default: `info`, and errors only from the
/// `zeromq` crate, which warns at each attempt to reconnect to a stopped engine's publisher,
/// where our own subscriber has said once that it went away; `RUST_LOG=info,zeromq=debug`
/// shows them). Dependencies' `log` records come out as events too.
fn init_logging() {
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into());
    let quiet_zeromq = |filter: EnvFilter| match "zeromq=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let filter = match std::env::var_os(EnvFilter::DEFAULT_ENV) {
        None => quiet_zeromq(filter.parse_lossy("")),
        Some(_) => filter.from_env().unwrap_or_else(|error| {
            eprintln!("dynamo-serve: RUST_LOG: {error}; logging at info");
            quiet_zeromq(EnvFilter::new("info"))
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    match options.command {
        Command::OpenApi(path) => write_openapi(path),
        Command::Serve => serve(options).await,
        Command::Worker => worker::run(options).await,
        Command::Frontend => frontend::run(options).await,
        Command::Planner(ref settings) => planner::run(&options, settings).await,
        Command::Profile(ref settings) => profile::run(&options, settings).await,
    }
}

fn write_openapi(path: Option<std::path::PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let text = serde_json::to_string_pretty(&dynamo_openai::openapi_document())?;
    match path {
        Some(path) => std::fs::write(path, text + "\n")?,
        None => println!("{text}"),
    }
    Ok(())
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = install_metrics()?;
    let model_file = engines::model_file(options.model.as_deref()).await?;
    let metadata = GgufMetadata::open(&model_file)?;
    // The same assembly as the split deployment (`deploy`), with in-process parts.
    let transport = InProcess::new();
    let bus = (options.router == RouterKind::Kv).then(LocalBus::new);
    let (router, index) = deploy::start_router(&options, bus.as_ref(), None).await?;
    let weights = engines::shared_weights(&options, &model_file)?;
    let disaggregated = options.prefill_workers > 0;
    let parts = if disaggregated {
        let layout = disagg::layout_of(&options, weights.as_ref())?;
        disagg::in_process_parts(&options, layout.as_ref())?
    } else {
        (0..options.workers)
            .map(|id| (WorkerId::new(id), disagg::Part::default()))
            .collect()
    };
    let mut records = Vec::new();
    let mut probes = Vec::new();
    for (id, part) in parts {
        let worker = deploy::start_worker(
            &options,
            weights.as_ref(),
            id,
            part,
            &transport,
            bus.clone(),
            |e| e,
        )
        .await?;
        tokio::spawn(worker.served.serving);
        probes.push((worker.record.id, worker.load));
        records.push(worker.record);
    }
    // Each worker's queue, KV blocks and preemptions on `/metrics`, as a frontend shows its
    // workers' load reports.
    tokio::spawn(engines::show_readings(probes));
    let workers = StaticDiscovery::new(records);
    let engine = if disaggregated {
        // The in-process workers' layouts were made here: the roles are the only filter.
        let (prefill, _) = deploy::start_router(&options, bus.as_ref(), index).await?;
        deploy::follow(
            &options,
            &prefill,
            transport.clone(),
            &workers,
            Pool::Prefill(None),
        )?;
        deploy::follow(&options, &router, transport, &workers, Pool::Decode(None))?;
        deploy::shed_load(&options, disagg::router(&options, prefill, router)?)
    } else {
        deploy::follow(&options, &router, transport, &workers, Pool::All)?;
        deploy::shed_load(&options, router)
    };
    serve_gateway(&options, &metadata, engine, metrics, |base| {
        print_welcome(&options, base);
    })
    .await
}

/// The OpenAI-compatible gateway for `engine`, on `--host`/`--port`, until Ctrl-C or SIGTERM;
/// then it stops accepting connections and finishes the open streams for up to
/// `--drain-timeout` seconds.
pub(crate) async fn serve_gateway(
    options: &Options,
    metadata: &GgufMetadata,
    engine: BoxEngine,
    metrics: PrometheusHandle,
    welcome: impl FnOnce(&str),
) -> Result<(), Box<dyn std::error::Error>> {
    // The main job's own candle workers serve a request's `n` choices from one prefill; the
    // gateway sends any other engine one request per choice. Where not every engine computes
    // the log-probabilities of a prompt, it refuses `echo` with `logprobs` (docs/gateway.md),
    // and streamed where not every engine sends them with a stream (the adapters do not).
    let entry = ModelEntry::from_gguf(options.name.clone(), engine, metadata)?
        .with_sampling_defaults(sampling::defaults(options, metadata))
        .with_forking(options.own_candle_workers())
        .with_prompt_logprobs(options.computes_prompt_logprobs())
        .with_streamed_prompt_logprobs(options.own_candle_workers());
    let registry = ModelRegistry::default();
    registry.insert(entry);
    if let Some(model) = embedding::load(&options.embedding_model).await? {
        registry.insert_embedding(model);
    }
    let keys = api_keys(options)?;
    if !keys.is_empty() {
        tracing::info!(keys = keys.len(), "the gateway asks for an API key");
    }
    let config = GatewayConfig::default()
        .with_default_max_tokens(options.default_max_tokens)
        .with_max_in_flight(options.max_in_flight)
        .with_body_limit(options.body_limit)
        .with_response_store_bytes(options.response_store_bytes)
        .with_api_keys(keys)
        .with_open_metrics(options.open_metrics);
    let mut gateway = Gateway::new(registry, config).with_metrics(metrics);
    if let Some(url) = &options.response_store {
        let (store, prefix) = response_store::open(url)?;
        tracing::info!(%url, "stored responses are kept in the shared store");
        gateway = gateway.with_shared_responses(store, prefix);
    }
    let acceptor = options
        .edge_tls
        .as_ref()
        .map(tls::edge_acceptor)
        .transpose()?;
    let address = SocketAddr::new(options.host, options.port.unwrap_or(8000));
    let listener = tokio::net::TcpListener::bind(address).await?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    welcome(&format!("{scheme}://{}", listener.local_addr()?));
    let deadline = std::time::Duration::from_secs(options.drain_timeout);
    let background = gateway.background_responses();
    let router = gateway.into_router();
    // Streamed answers are many small writes: without TCP_NODELAY each waits for the client's
    // delayed acknowledgement of the one before (about 40 ms).
    match acceptor {
        None => {
            let listener = dynamo_openai::no_delay(listener);
            serve_until_drained(listener, router, background, deadline).await
        }
        Some(acceptor) => {
            use axum::serve::ListenerExt;
            let listener = tls_listener::builder(acceptor)
                .handshake_timeout(tls::HANDSHAKE_TIMEOUT)
                .listen(listener)
                .tap_io(|stream: &mut tls_listener::rustls::server::TlsStream<_>| {
                    let _ = stream.get_ref().0.set_nodelay(true);
                });
            serve_until_drained(listener, router, background, deadline).await
        }
    }
}

/// How often the gateway's [`keep_metrics_drained`] drains the recorder's histograms.
/// The process's Prometheus recorder, drained every [`METRICS_UPKEEP_EVERY`]: installed before
/// anything that records (routers, workers joining, engine servers' pollers), so that no
/// series set during start-up is lost to the no-op recorder that stands before it.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let metrics = dynamo_openai::install_prometheus()?;
    let drained = metrics.clone();
    keep_metrics_drained(METRICS_UPKEEP_EVERY, move || drained.run_upkeep())?;
    Ok(metrics)
}

const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Run `upkeep` (the Prometheus recorder's: it moves the samples that histograms recorded into
/// their buckets) `every` so often ([`METRICS_UPKEEP_EVERY`] in the gateway), on a thread of
/// its own, for the life of the process.
///
/// The recorder keeps every histogram sample until a scrape of `/metrics` or an upkeep drains
/// it (the gateway records a sample per token, the router two per request): a gateway that
/// nobody scraped grew by 220–360 bytes a request in the overhead bench, 8–21 with this
/// (`docs/gateway.md`, Overhead). A thread rather than a task: five seconds of samples at full
/// load (over three million at 35,000 requests a second) would hold up the requests queued
/// behind the drain on a runtime worker.
fn keep_metrics_drained(
    every: std::time::Duration,
    upkeep: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                upkeep();
            }
        })
        .map(drop)
}

/// Serve `router` on `listener` until Ctrl-C or SIGTERM; then stop accepting connections and
/// finish the open streams and the `background` responses for up to `deadline`.
async fn serve_until_drained<L>(
    listener: L,
    router: axum::Router,
    background: dynamo_openai::BackgroundResponses,
    deadline: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error>>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // axum's graceful shutdown waits for every open connection, a long stream's too: the
    // deadline bounds it.
    let signalled = std::sync::Arc::new(tokio::sync::Notify::new());
    let stopping = std::sync::Arc::clone(&signalled);
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!(
            "stopping: no new connections; finishing open streams and background responses \
             (up to {} s)",
            deadline.as_secs()
        );
        stopping.notify_one();
    });
    let drained = async {
        served.await?;
        background.finished().await;
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        drained = drained => {
            drained?;
            tracing::info!("drained");
        }
        () = async {
            signalled.notified().await;
            tokio::time::sleep(deadline).await;
        } => tracing::warn!(
            background = background.running(),
            "drain deadline passed with streams or background responses still open"
        ),
    }
    Ok(())
}

/// The API keys of `--api-key-file` (one a line) and `DYNAMO_API_KEYS` (comma separated).
fn api_keys(options: &Options) -> Result<ApiKeys, Box<dyn std::error::Error>> {
    let mut keys: Vec<String> = match &options.api_key_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|error| format!("cannot read the API key file {}: {error}", file.display()))?
            .lines()
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    if let Ok(more) = std::env::var("DYNAMO_API_KEYS") {
        keys.extend(more.split(',').map(str::to_owned));
    }
    let keys = ApiKeys::new(keys);
    if keys.is_empty() && options.api_key_file.is_some() {
        return Err(
            "the API key file holds no key; an empty file would leave the gateway open".into(),
        );
    }
    Ok(keys)
}

/// Connect to the NATS server at `url` for `--namespace`, with `--nats-creds` and `--nats-tls-*`.
pub(crate) async fn connect_nats(
    options: &Options,
    url: &str,
) -> Result<dynamo_transport::events::NatsEvents, dynamo_core::Error> {
    dynamo_transport::events::NatsEvents::connect_with(
        url,
        &options.namespace,
        &options.nats_access,
    )
    .await
}

/// Log when `nats` loses or regains its server, as `who`.
pub(crate) fn log_nats_connection(who: &'static str, nats: &dynamo_transport::events::NatsEvents) {
    let mut connection = nats.connection();
    tokio::spawn(async move {
        while connection.changed().await.is_ok() {
            if *connection.borrow_and_update() {
                tracing::info!("{who}: NATS connection restored");
            } else {
                tracing::warn!("{who}: NATS connection lost; reconnecting");
            }
        }
    });
}

/// Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a worker that calls it before it registers catches a SIGTERM that
/// comes right after, and deregisters, where the default action would end it with its record
/// left behind.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(stream: Option<&mut Signal>) {
        match stream {
            Some(stream) => {
                stream.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            () = received(interrupt.as_mut()) => {}
            () = received(terminate.as_mut()) => {}
        }
    }
}

fn print_welcome(options: &Options, base: &str) {
    let name = &options.name;
    let routing = options.router.describe();
    let kind = options.engine.describe();
    if options.prefill_workers > 0 {
        println!(
            "dynamo gateway on {base}: model `{name}` on {} prefill and {} decode {kind} \
             workers with {routing} and {} placement",
            options.prefill_workers,
            options.decode_workers,
            options.placement.describe()
        );
    } else {
        println!(
            "dynamo gateway on {base}: model `{name}` on {} {kind} workers with {routing}",
            options.workers
        );
    }
    match options.engine {
        EngineKind::Candle => {}
        EngineKind::Mocker => println!(
            "  (the workers echo the prompt at a simulated engine's pace, {}x real time)",
            options.speedup
        ),
        EngineKind::Echo => println!("  (the workers echo the prompt at once, max_tokens long)"),
    }
    print_examples(name, base);
}

/// How to talk to the gateway at `base`.
pub(crate) fn print_examples(name: &str, base: &str) {
    println!();
    println!("  curl {base}/v1/chat/completions -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}'"
    );
    println!("  curl -N {base}/v1/completions -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"model\": \"{name}\", \"prompt\": \"Once upon a time\", \"max_tokens\": 16, \"stream\": true}}'"
    );
    println!("  curl {base}/v1/models     curl {base}/metrics");
    println!();
    println!("  OpenAI Python client: OpenAI(base_url=\"{base}/v1\", api_key=\"unused\")");
    println!("  Ctrl-C stops it.");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_metrics_upkeep_runs_again_and_again() {
        let (ran, runs) = std::sync::mpsc::channel();
        super::keep_metrics_drained(Duration::from_millis(5), move || {
            let _ = ran.send(());
        })
        .expect("a thread");
        for _ in 0..3 {
            runs.recv_timeout(Duration::from_secs(10))
                .expect("an upkeep within 10 s");
        }
    }
}
