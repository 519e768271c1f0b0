//! The dynamo main job: an OpenAI-compatible gateway on 127.0.0.1:8000 that routes with
//! KV-aware routing across in-process workers, with embedded defaults and no external services.
//!
//! ```text
//! cargo run --release -p dynamo-serve [-- --port 8000 --workers 2 --model FILE.gguf]
//! cargo run --release -p dynamo-serve -- openapi [FILE]   # write the OpenAPI document and exit
//! ```
//!
//! The model is SmolLM2-135M-Instruct, fetched once into the cache (see `dynamo-assets`): its
//! GGUF file gives the weights, the tokenizer and the chat template. Each worker is a
//! `dynamo-candle` engine running the model on the CPU with its own paged prefix cache, whose KV
//! events feed the router's index. `--engine mocker` puts simulated workers there instead, and
//! `--engine echo` instant ones (for overhead benches).

mod options;

use std::net::SocketAddr;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{BlockSize, BoxEngine, EchoEngine, KvEvent, WorkerId};
use dynamo_mocker::{EngineConfig, LiveConfig, LiveEngine, PolynomialTiming};
use dynamo_openai::{Gateway, GatewayConfig, GgufMetadata, ModelEntry, ModelRegistry};
use dynamo_router::{ApproxConfig, RoundRobin, RouterService, SharedIndex};
use tokio::sync::mpsc;

use options::{Command, EngineKind, Options, RouterKind};

/// mimalloc: the gateway allocates many small short-lived buffers per request, and the system
/// allocator spent a fifth of the CPU time on them in the overhead bench (`docs/gateway.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// KV events in flight from all workers to the router's index; when it is full, a worker
/// drops events and the index notices the gap (see `LiveEngine`).
const EVENT_CAPACITY: usize = 4096;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("dynamo-serve: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let options = match Options::from_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n\n{}", options::USAGE);
            std::process::exit(2);
        }
    };
    match options.command {
        Command::Help => {
            println!("{}", options::USAGE);
            Ok(())
        }
        Command::OpenApi(path) => write_openapi(path),
        Command::Serve => serve(options).await,
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
    let model_path = match options.model.clone() {
        Some(path) if path.exists() => path,
        Some(spec) => {
            let spec = spec.to_string_lossy().into_owned();
            let Some(file) = dynamo_assets::HubFile::parse(&spec) else {
                return Err(format!(
                    "--model {spec}: no such file, and not a Hugging Face Hub file (ORG/REPO/FILE)"
                )
                .into());
            };
            println!("fetching {spec} from the Hugging Face Hub (once; then from its cache)");
            tokio::task::spawn_blocking(move || file.fetch()).await??
        }
        None => {
            let cache = dynamo_assets::cache_dir()?;
            let file = dynamo_assets::SMOLLM2_135M_INSTRUCT;
            tokio::task::spawn_blocking(move || file.fetch(&cache)).await??
        }
    };
    let metadata = GgufMetadata::open(&model_path)?;
    let block_size = BlockSize::new(options.block_size)?;
    let router = workers(&options, &model_path, block_size)?;
    let entry = ModelEntry::from_gguf(options.name.clone(), BoxEngine::new(router), &metadata)?;
    let registry = ModelRegistry::default();
    registry.insert(entry);

    let mut config = GatewayConfig::default().with_default_max_tokens(options.default_max_tokens);
    config.max_in_flight = options.max_in_flight;
    let gateway = Gateway::new(registry, config).with_metrics(dynamo_openai::install_prometheus()?);
    let address = SocketAddr::new(options.host, options.port);
    let listener = tokio::net::TcpListener::bind(address).await?;
    print_welcome(&options, listener.local_addr()?);
    axum::serve(listener, gateway.into_router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The router over `options.workers` in-process workers.
fn workers(
    options: &Options,
    model_path: &std::path::Path,
    block_size: BlockSize,
) -> Result<RouterService, Box<dyn std::error::Error>> {
    let builder = RouterService::builder(block_size);
    let (builder, index) = match options.router {
        RouterKind::Kv => {
            let index = SharedIndex::new(block_size);
            (builder.kv_events(index.clone()), Some(index))
        }
        RouterKind::ApproxKv => (builder.approximate(ApproxConfig::default()), None),
        RouterKind::RoundRobin => (builder.policy(RoundRobin::new()), None),
    };
    let router = builder.build();
    let events = index.map(|index| {
        let (events, mut received) = mpsc::channel::<KvEvent>(EVENT_CAPACITY);
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                // An index error (a gap, an unknown block) is counted by the index itself.
                let _ = index.apply(&event);
            }
        });
        events
    });
    let weights = match options.engine {
        EngineKind::Candle => Some(LlamaWeights::load(model_path, &candle_core::Device::Cpu)?),
        EngineKind::Mocker | EngineKind::Echo => None,
    };
    for id in 0..options.workers {
        let worker = WorkerId::new(id);
        match (options.engine, &weights) {
            (EngineKind::Candle, Some(weights)) => {
                let config = CandleConfig {
                    blocks: options.kv_blocks.unwrap_or(CandleConfig::default().blocks),
                    block_size,
                    worker,
                    ..CandleConfig::default()
                };
                let engine = CandleEngine::start(weights.clone(), config, events.clone())?;
                router.insert_worker(worker, engine);
            }
            (EngineKind::Echo, _) => router.insert_worker(worker, EchoEngine::new().repeating()),
            _ => {
                let config = LiveConfig {
                    engine: EngineConfig {
                        num_gpu_blocks: options.kv_blocks.map_or(16_384, u64::from),
                        block_size,
                        ..EngineConfig::default()
                    },
                    speedup: options.speedup,
                    worker,
                    ..LiveConfig::default()
                };
                let (engine, run) =
                    LiveEngine::new(config, PolynomialTiming::default(), events.clone());
                tokio::spawn(run);
                router.insert_worker(worker, engine);
            }
        }
    }
    Ok(router)
}

fn print_welcome(options: &Options, address: SocketAddr) {
    let name = &options.name;
    let routing = match options.router {
        RouterKind::Kv => "KV-aware routing",
        RouterKind::ApproxKv => "approximate KV-aware routing",
        RouterKind::RoundRobin => "round-robin routing",
    };
    let kind = match options.engine {
        EngineKind::Candle => "candle (CPU)",
        EngineKind::Mocker | EngineKind::Echo => "simulated",
    };
    println!(
        "dynamo gateway on http://{address}: model `{name}` on {} {kind} workers with {routing}",
        options.workers
    );
    match options.engine {
        EngineKind::Candle => {}
        EngineKind::Mocker => println!(
            "  (the workers echo the prompt at a simulated engine's pace, {}x real time)",
            options.speedup
        ),
        EngineKind::Echo => println!("  (the workers echo the prompt at once, max_tokens long)"),
    }
    println!();
    println!("  curl http://{address}/v1/chat/completions -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}'"
    );
    println!("  curl -N http://{address}/v1/completions -H 'content-type: application/json' \\");
    println!(
        "    -d '{{\"model\": \"{name}\", \"prompt\": \"Once upon a time\", \"max_tokens\": 16, \"stream\": true}}'"
    );
    println!("  curl http://{address}/v1/models     curl http://{address}/metrics");
    println!();
    println!(
        "  OpenAI Python client: OpenAI(base_url=\"http://{address}/v1\", api_key=\"unused\")"
    );
    println!("  Ctrl-C stops it.");
}
