//! Disaggregated against aggregated serving on the real candle engine (SmolLM2-135M-Instruct,
//! fetched once into the cache), with the same two workers, in the same run:
//!
//! - **aggregated**: two engines behind one [`RouterService`] (the KV-aware default policy);
//! - **disaggregated**: one prefill and one decode engine behind a [`DisaggRouter`], the blocks
//!   handed over in process ([`LocalExports`]) with [`AlwaysRemote`] and with
//!   [`ExpectedTtftPlacement`] (its prefill speed fitted to this machine at start), and over TCP
//!   loopback with [`AlwaysRemote`].
//!
//! The workload is the case disaggregation exists for: a few requests with short prompts decode
//! (greedy, `ignore_eos`) while long prompts arrive, staggered. Everything is measured on the
//! client side, reading each stream: the gaps between consecutive tokens (ITL) of the running
//! decodes while a long prompt waits for its first token, and at other times; the long prompts'
//! time to first token; the ITL of every request; output tokens per second.
//!
//! ```sh
//! cargo run --release -p dynamo-candle --example disagg_itl
//! cargo run --release -p dynamo-candle --example disagg_itl -- --decodes 4 --decode-tokens 64 \
//!     --longs 3 --long-len 800 --stagger-ms 2000 --shapes aggregated,remote,expected,tcp
//! ```
//!
//! On the CPU every engine's matrix products go through rayon's one global pool, one thread
//! per core: two engines in one process share the cores whatever the shape (see
//! `docs/disaggregation.md`).

#![expect(clippy::unwrap_used, reason = "an example that fails loudly")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use dynamo_candle::{CandleConfig, CandleEngine, KvExport, LlamaWeights};
use dynamo_core::{BlockSize, BoxEngine, EngineExt, GenerateRequest, WorkerId};
use dynamo_kvbm::{KvExports, KvFetch, KvFetcher, LocalExports, TcpFetch, TcpFetchConfig};
use dynamo_router::disagg::{AlwaysRemote, DisaggRouter, ExpectedTtftPlacement, PlacementPolicy};
use dynamo_router::{PrefillTimeModel, RouterService};
use futures::StreamExt;
use tokio::sync::mpsc;

const BLOCK: u32 = 16;
/// Tokens one engine step runs (the engine's default): a long prompt's chunk.
const STEP_TOKENS: usize = 512;

/// The requests of one run.
#[derive(Debug, Clone)]
struct Workload {
    decodes: usize,
    decode_tokens: u32,
    longs: usize,
    long_len: usize,
    long_tokens: u32,
    stagger: Duration,
    shapes: Vec<String>,
}

impl Workload {
    fn from_args() -> Self {
        let mut workload = Workload {
            decodes: 4,
            decode_tokens: 64,
            longs: 3,
            long_len: 800,
            long_tokens: 8,
            stagger: Duration::from_millis(2000),
            shapes: ["aggregated", "remote", "expected", "tcp"]
                .map(String::from)
                .to_vec(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.chunks(2) {
            let [flag, value] = pair else {
                panic!("flags take a value: {pair:?}");
            };
            match flag.as_str() {
                "--decodes" => workload.decodes = value.parse().unwrap(),
                "--decode-tokens" => workload.decode_tokens = value.parse().unwrap(),
                "--longs" => workload.longs = value.parse().unwrap(),
                "--long-len" => workload.long_len = value.parse().unwrap(),
                "--long-tokens" => workload.long_tokens = value.parse().unwrap(),
                "--stagger-ms" => workload.stagger = Duration::from_millis(value.parse().unwrap()),
                "--shapes" => workload.shapes = value.split(',').map(String::from).collect(),
                other => panic!("unknown flag {other}"),
            }
        }
        workload
    }
}

fn config(worker: u64) -> CandleConfig {
    CandleConfig {
        block_size: BlockSize::new(BLOCK).unwrap(),
        worker: WorkerId::new(worker),
        max_step_tokens: STEP_TOKENS,
        ..CandleConfig::default()
    }
}

fn greedy(id: String, tokens: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    let mut request = GenerateRequest::new(id, "smollm2", tokens).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request.stop.ignore_eos = true;
    request
}

/// A short chat prompt, different for each `i`.
fn short_prompt(i: usize) -> Vec<u32> {
    support::chat_prompt(&format!(
        "I am reader {i}. Tell me a long story about a lighthouse keeper and the sea."
    ))
}

/// A chat prompt of `len` tokens that shares no block with any other `salt`.
fn long_prompt(len: usize, salt: &str) -> Vec<u32> {
    let text: String = (1..=len / 8)
        .map(|i| format!("Note {i} from {salt}: the tide rose, and the keeper wrote it down. "))
        .collect();
    let mut tokens = support::chat_prompt(&text);
    assert!(
        tokens.len() >= len,
        "the prompt has {} tokens",
        tokens.len()
    );
    tokens.truncate(len);
    tokens
}

/// Run a few requests on `engine` alone, so that the first timed step is not its first.
async fn warm_up(engine: &CandleEngine) {
    let mut engine = engine.clone();
    let prompt = long_prompt(STEP_TOKENS + 100, "warm-up");
    engine
        .generate_all(greedy("warm-up".into(), prompt, 4))
        .await
        .unwrap();
}

/// The prefill speed of an idle engine on this machine: a line through the time of a short
/// and of a full-step prompt, each the best of three.
async fn fit_prefill(weights: &LlamaWeights) -> PrefillTimeModel {
    let engine = CandleEngine::start(weights.clone(), config(99), None).unwrap();
    warm_up(&engine).await;
    let best = |len: usize| {
        let mut engine = engine.clone();
        async move {
            let mut best = Duration::MAX;
            for round in 0..3 {
                let prompt = long_prompt(len, &format!("fit-{len}-{round}"));
                let start = Instant::now();
                engine
                    .generate_all(greedy(format!("fit-{len}-{round}"), prompt, 1))
                    .await
                    .unwrap();
                best = best.min(start.elapsed());
            }
            best.as_secs_f64() * 1e3
        }
    };
    let (short, long) = (32, STEP_TOKENS);
    let (short_ms, long_ms) = (best(short).await, best(long).await);
    let b = ((long_ms - short_ms) / (long - short) as f64).max(0.0);
    PrefillTimeModel {
        a: 0.0,
        b,
        c: (short_ms - b * short as f64).max(0.0),
        chunk_tokens: STEP_TOKENS as u64,
    }
}

/// Two engines behind one KV-aware router.
async fn aggregated(weights: &LlamaWeights) -> (BoxEngine, Vec<CandleEngine>) {
    let router = RouterService::builder(BlockSize::new(BLOCK).unwrap()).build();
    let mut engines = Vec::new();
    for worker in 1..=2 {
        let engine = CandleEngine::start(weights.clone(), config(worker), None).unwrap();
        warm_up(&engine).await;
        router.insert_worker(WorkerId::new(worker), engine.clone());
        engines.push(engine);
    }
    (router.boxed_engine(), engines)
}

/// KV blocks each engine holds (in use or cached): how the work was spread, as long as
/// nothing is evicted (a long prompt is 50 blocks).
fn blocks_held(engines: &[CandleEngine]) -> Vec<usize> {
    engines
        .iter()
        .map(|engine| {
            let counters = engine.counters();
            counters.in_use + counters.cached
        })
        .collect()
}

/// How the decode engine reads the prefill engine's blocks.
enum Handover {
    InProcess,
    Tcp,
}

/// A shape under test: its engine, and for a split one the prefill engine's exports and its
/// TCP block server's task (aborted when done).
struct Shape {
    engine: BoxEngine,
    /// The aggregated shape's engines, to see where the work went.
    engines: Vec<CandleEngine>,
    exports: Option<Arc<KvExports>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A prefill engine and a decode engine behind a disaggregated router.
async fn disaggregated(
    weights: &LlamaWeights,
    placement: impl PlacementPolicy,
    handover: Handover,
) -> Shape {
    let block_size = BlockSize::new(BLOCK).unwrap();
    let block_bytes = weights
        .config()
        .kv_layout("smollm2", block_size)
        .block_bytes();
    let exports = Arc::new(KvExports::new(block_bytes, 512, Duration::from_secs(30)).unwrap());
    let (address, fetch, server): (_, Arc<dyn KvFetch>, _) = match handover {
        Handover::InProcess => {
            let local = LocalExports::new();
            local.register(WorkerId::new(1), exports.clone());
            (None, Arc::new(KvFetcher::new(local)), None)
        }
        Handover::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let server = tokio::spawn(dynamo_kvbm::serve_exports(listener, exports.clone()));
            let tcp = TcpFetch::new(TcpFetchConfig::new(block_bytes, 512)).unwrap();
            let fetch = KvFetcher::new(LocalExports::new()).with_tcp(tcp);
            (Some(address), Arc::new(fetch), Some(server))
        }
    };
    let export = Some(KvExport {
        exports: exports.clone(),
        address,
    });
    let prefill = CandleEngine::start(
        weights.clone(),
        CandleConfig {
            export,
            ..config(1)
        },
        None,
    )
    .unwrap();
    let fetch = Some(fetch);
    let decode =
        CandleEngine::start(weights.clone(), CandleConfig { fetch, ..config(2) }, None).unwrap();
    warm_up(&prefill).await;
    warm_up(&decode).await;
    let block_size = BlockSize::new(BLOCK).unwrap();
    let prefill_router = RouterService::builder(block_size).build();
    prefill_router.insert_worker(WorkerId::new(1), prefill);
    let decode_router = RouterService::builder(block_size).build();
    decode_router.insert_worker(WorkerId::new(2), decode);
    let router = DisaggRouter::new(prefill_router, decode_router, placement).unwrap();
    Shape {
        engine: router.boxed_engine(),
        engines: Vec::new(),
        exports: Some(exports),
        server,
    }
}

/// One request as its client saw it: when it was sent and when each token arrived.
#[derive(Debug)]
struct Trace {
    sent: Instant,
    tokens: Vec<Instant>,
}

impl Trace {
    fn gaps(&self) -> impl Iterator<Item = (Instant, Instant)> + '_ {
        self.tokens.windows(2).map(|pair| (pair[0], pair[1]))
    }
}

/// Send `request` and read its stream; `started` hears once two tokens have arrived (the
/// request is decoding, on the decode engine when split).
async fn client(
    mut engine: BoxEngine,
    request: GenerateRequest,
    started: Option<mpsc::Sender<()>>,
) -> Trace {
    let sent = Instant::now();
    let mut stream = engine.generate(request).await.unwrap();
    let mut tokens = Vec::new();
    while let Some(chunk) = stream.next().await {
        let now = Instant::now();
        tokens.extend(chunk.unwrap().tokens.iter().map(|_| now));
        if tokens.len() >= 2
            && let Some(started) = &started
        {
            let _ = started.try_send(());
        }
    }
    Trace { sent, tokens }
}

/// What one shape measured, in milliseconds (tokens per second for `throughput`).
#[derive(Debug)]
struct Figures {
    shape: &'static str,
    itl_during: Vec<f64>,
    itl_outside: Vec<f64>,
    itl_all: Vec<f64>,
    long_ttft: Vec<f64>,
    throughput: f64,
    /// Cores this process kept busy while the shape ran (CPU time / wall time).
    cores_used: f64,
    /// The machine's one-minute load average when the shape ended (other processes count).
    load: f64,
    /// For a split shape, the requests whose prompt was handed over (placed remote); for the
    /// aggregated one, the KV blocks each engine filled.
    placement: String,
    /// Requests sent.
    requests: usize,
}

/// Run the workload on `engine`: the decodes first, then (once they all decode) the long
/// prompts, staggered.
async fn measure(shape: &'static str, engine: BoxEngine, workload: &Workload) -> Figures {
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let (started, mut decoding) = mpsc::channel(workload.decodes);
    let decodes: Vec<_> = (0..workload.decodes)
        .map(|i| {
            let request = greedy(
                format!("{shape}-decode-{i}"),
                short_prompt(i),
                workload.decode_tokens,
            );
            tokio::spawn(client(engine.clone(), request, Some(started.clone())))
        })
        .collect();
    drop(started);
    for _ in 0..workload.decodes {
        decoding.recv().await.unwrap();
    }
    let mut longs = Vec::new();
    for i in 0..workload.longs {
        if i > 0 {
            // Staggered arrivals on purpose: the next long prompt comes while the last prefills.
            tokio::time::sleep(workload.stagger).await;
        }
        let prompt = long_prompt(workload.long_len, &format!("{shape}-long-{i}"));
        let request = greedy(format!("{shape}-long-{i}"), prompt, workload.long_tokens);
        longs.push(tokio::spawn(client(engine.clone(), request, None)));
    }
    let decodes = futures::future::join_all(decodes).await;
    let longs = futures::future::join_all(longs).await;
    let decodes: Vec<Trace> = decodes.into_iter().map(Result::unwrap).collect();
    let longs: Vec<Trace> = longs.into_iter().map(Result::unwrap).collect();
    let end = decodes
        .iter()
        .chain(&longs)
        .filter_map(|trace| trace.tokens.last().copied())
        .max()
        .unwrap();

    // A decode gap is "during" a long prefill when it overlaps a long prompt's wait for its
    // first token.
    let prefilling: Vec<(Instant, Instant)> = longs
        .iter()
        .map(|trace| (trace.sent, trace.tokens[0]))
        .collect();
    let ms = |(from, to): (Instant, Instant)| (to - from).as_secs_f64() * 1e3;
    let (mut itl_during, mut itl_outside) = (Vec::new(), Vec::new());
    for gap in decodes.iter().flat_map(Trace::gaps) {
        let overlaps = prefilling
            .iter()
            .any(|&(sent, first)| gap.1 > sent && gap.0 < first);
        if overlaps {
            itl_during.push(ms(gap));
        } else {
            itl_outside.push(ms(gap));
        }
    }
    let itl_all = decodes
        .iter()
        .chain(&longs)
        .flat_map(Trace::gaps)
        .map(ms)
        .collect();
    let tokens: usize = decodes.iter().chain(&longs).map(|t| t.tokens.len()).sum();
    Figures {
        shape,
        itl_during,
        itl_outside,
        itl_all,
        long_ttft: prefilling.into_iter().map(ms).collect(),
        throughput: tokens as f64 / (end - start).as_secs_f64(),
        cores_used: (cpu_seconds() - cpu_start) / start.elapsed().as_secs_f64(),
        load: load_average(),
        placement: String::new(),
        requests: decodes.len() + longs.len(),
    }
}

/// CPU seconds this process has used (user and system; Linux, 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // After the command name: state is field 3, utime and stime fields 14 and 15, in ticks
    // of USER_HZ (100 on Linux).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The one-minute load average (Linux, 0 elsewhere).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The `q` quantile (nearest rank) of `values`, 0 when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn print_table(figures: &[Figures]) {
    println!(
        "| shape | decode ITL during long prefills p50 / p99 ms (gaps) | decode ITL otherwise p50 ms \
         | ITL all p50 / p99 ms | long TTFT mean / max ms | tokens/s | cores used (load) | placement | ITL p99 during / aggregated |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let baseline = figures
        .iter()
        .find(|f| f.shape == "aggregated")
        .map(|f| quantile(&f.itl_during, 0.99));
    for f in figures {
        let during_p99 = quantile(&f.itl_during, 0.99);
        let ratio = baseline.map_or("-".to_owned(), |b| format!("{:.2}", during_p99 / b));
        println!(
            "| {} | {:.0} / {:.0} ({}) | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} | {:.2} ({:.1}) | {} | {ratio} |",
            f.shape,
            quantile(&f.itl_during, 0.5),
            during_p99,
            f.itl_during.len(),
            quantile(&f.itl_outside, 0.5),
            quantile(&f.itl_all, 0.5),
            quantile(&f.itl_all, 0.99),
            mean(&f.long_ttft),
            quantile(&f.long_ttft, 1.0),
            f.throughput,
            f.cores_used,
            f.load,
            f.placement,
        );
    }
}

fn json(workload: &Workload, figures: &[Figures]) -> serde_json::Value {
    let shapes: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "shape": f.shape,
                "decode_itl_during_prefill_ms": {
                    "p50": quantile(&f.itl_during, 0.5),
                    "p99": quantile(&f.itl_during, 0.99),
                    "gaps": f.itl_during.len(),
                },
                "decode_itl_otherwise_p50_ms": quantile(&f.itl_outside, 0.5),
                "itl_all_ms": {"p50": quantile(&f.itl_all, 0.5), "p99": quantile(&f.itl_all, 0.99)},
                "long_ttft_ms": f.long_ttft,
                "tokens_per_s": f.throughput,
                "cores_used": f.cores_used,
                "load_average": f.load,
                "placement": f.placement,
            })
        })
        .collect();
    serde_json::json!({
        "example": "disagg_itl",
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "workload": {
            "decodes": workload.decodes,
            "decode_tokens": workload.decode_tokens,
            "longs": workload.longs,
            "long_len": workload.long_len,
            "long_tokens": workload.long_tokens,
            "stagger_ms": workload.stagger.as_millis() as u64,
        },
        "shapes": shapes,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let workload = Workload::from_args();
    let weights = LlamaWeights::load(support::model_path(), &Device::Cpu).unwrap();
    let fitted = fit_prefill(&weights).await;
    println!(
        "prefill speed on one idle engine: {:.3} ms/token + {:.1} ms/step",
        fitted.b, fitted.c
    );
    let mut figures = Vec::new();
    for shape in &workload.shapes {
        let (name, shape) = match shape.as_str() {
            "aggregated" => {
                let (engine, engines) = aggregated(&weights).await;
                let shape = Shape {
                    engine,
                    engines,
                    exports: None,
                    server: None,
                };
                ("aggregated", shape)
            }
            "remote" => {
                let shape = disaggregated(&weights, AlwaysRemote, Handover::InProcess).await;
                ("disagg in process, always remote", shape)
            }
            "expected" => {
                let placement = ExpectedTtftPlacement {
                    prefill: fitted,
                    ..ExpectedTtftPlacement::default()
                };
                let shape = disaggregated(&weights, placement, Handover::InProcess).await;
                ("disagg in process, expected TTFT", shape)
            }
            "tcp" => {
                let shape = disaggregated(&weights, AlwaysRemote, Handover::Tcp).await;
                ("disagg over TCP, always remote", shape)
            }
            other => panic!("unknown shape {other}"),
        };
        let before = blocks_held(&shape.engines);
        let mut measured = measure(name, shape.engine, &workload).await;
        measured.placement = match shape.exports {
            Some(exports) => format!(
                "{}/{} remote",
                exports.counters().offered,
                measured.requests
            ),
            None => {
                let filled: Vec<String> = blocks_held(&shape.engines)
                    .iter()
                    .zip(&before)
                    .map(|(after, before)| after.saturating_sub(*before).to_string())
                    .collect();
                format!("blocks {}", filled.join("/"))
            }
        };
        figures.push(measured);
        if let Some(server) = shape.server {
            server.abort();
        }
    }
    print_table(&figures);
    println!("{}", json(&workload, &figures));
}
