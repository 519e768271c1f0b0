//! Command-line flags.

use std::net::IpAddr;
use std::path::PathBuf;

pub(crate) const USAGE: &str = "\
dynamo-serve: an OpenAI-compatible gateway with KV-aware routing over in-process workers

USAGE:
    dynamo-serve [FLAGS]            serve (defaults need no flags)
    dynamo-serve openapi [FILE]     write the OpenAPI document (to standard output without FILE)

FLAGS:
    --host ADDR              listen address [127.0.0.1]
    --port N                 listen port [8000]
    --workers N              workers behind the router [2]
    --engine KIND            candle: the model itself, on the CPU (dynamo-candle);
                             mocker: simulated engines with a paged prefix cache and KV events,
                             answering with the prompt at a real engine's pace;
                             echo: answer max_tokens tokens at once (overhead benches) [candle]
    --router POLICY          kv: KV-aware, from the workers' KV events (candle, mocker);
                             approx-kv: KV-aware, from the router's own decisions;
                             round-robin [kv]
    --speedup X              mocker workers run X times faster than real time [1]
    --model FILE             a llama-family GGUF file: weights, tokenizer and chat template;
                             a local path, or ORG/REPO[@REVISION]/FILE on the Hugging Face Hub
                             [SmolLM2-135M-Instruct, fetched once into the cache]
    --name NAME              the model name clients use [smollm2]
    --block-size N           KV block size in tokens, for the workers and the router [16]
    --kv-blocks N            KV blocks per worker [candle 512, mocker 16384]
    --default-max-tokens N   max_tokens of requests that give none [256]
    --max-in-flight N        requests served at once before 503 [4096]
    --help                   this text";

/// Which engine the in-process workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// `dynamo_candle::CandleEngine`: the model on the CPU.
    Candle,
    /// `dynamo_mocker::LiveEngine`: a simulated engine at the timing model's pace.
    Mocker,
    /// `dynamo_core::EchoEngine::repeating`: full-length answers at once.
    Echo,
}

/// How the router picks a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouterKind {
    /// KV-aware, with the index fed by the workers' KV events.
    Kv,
    /// KV-aware, with the index predicted from the router's own decisions.
    ApproxKv,
    /// Each worker in turn.
    RoundRobin,
}

pub(crate) enum Command {
    Serve,
    OpenApi(Option<PathBuf>),
    Help,
}

pub(crate) struct Options {
    pub(crate) command: Command,
    pub(crate) host: IpAddr,
    pub(crate) port: u16,
    pub(crate) workers: u64,
    pub(crate) engine: EngineKind,
    pub(crate) router: RouterKind,
    pub(crate) speedup: f64,
    pub(crate) model: Option<PathBuf>,
    pub(crate) name: String,
    pub(crate) block_size: u32,
    pub(crate) kv_blocks: Option<u32>,
    pub(crate) default_max_tokens: u32,
    pub(crate) max_in_flight: usize,
}

impl Options {
    pub(crate) fn from_args(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            command: Command::Serve,
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            workers: 2,
            engine: EngineKind::Candle,
            router: RouterKind::Kv,
            speedup: 1.0,
            model: None,
            name: "smollm2".to_owned(),
            block_size: 16,
            kv_blocks: None,
            default_max_tokens: 256,
            max_in_flight: 4096,
        };
        let mut args = args.peekable();
        if args.peek().map(String::as_str) == Some("openapi") {
            args.next();
            options.command = Command::OpenApi(args.next().map(PathBuf::from));
            return match args.next() {
                Some(extra) => Err(format!("unexpected argument {extra:?}")),
                None => Ok(options),
            };
        }
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                options.command = Command::Help;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--host" => options.host = parse(&flag, &value)?,
                "--port" => options.port = parse(&flag, &value)?,
                "--workers" => options.workers = parse(&flag, &value)?,
                "--engine" => {
                    options.engine = match value.as_str() {
                        "candle" => EngineKind::Candle,
                        "mocker" => EngineKind::Mocker,
                        "echo" => EngineKind::Echo,
                        _ => {
                            return Err(format!(
                                "--engine takes candle, mocker or echo, not {value:?}"
                            ));
                        }
                    }
                }
                "--router" => {
                    options.router = match value.as_str() {
                        "kv" => RouterKind::Kv,
                        "approx-kv" => RouterKind::ApproxKv,
                        "round-robin" => RouterKind::RoundRobin,
                        _ => {
                            return Err(format!(
                                "--router takes kv, approx-kv or round-robin, not {value:?}"
                            ));
                        }
                    }
                }
                "--speedup" => options.speedup = parse(&flag, &value)?,
                "--model" => options.model = Some(PathBuf::from(value)),
                "--name" => options.name = value,
                "--block-size" => options.block_size = parse(&flag, &value)?,
                "--kv-blocks" => options.kv_blocks = Some(parse(&flag, &value)?),
                "--default-max-tokens" => options.default_max_tokens = parse(&flag, &value)?,
                "--max-in-flight" => options.max_in_flight = parse(&flag, &value)?,
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if options.workers == 0 {
            return Err("--workers must be at least 1".to_owned());
        }
        if options.kv_blocks == Some(0) {
            return Err("--kv-blocks must be at least 1".to_owned());
        }
        if options.engine == EngineKind::Echo && options.router == RouterKind::Kv {
            return Err(
                "echo workers publish no KV events: use --router approx-kv or round-robin"
                    .to_owned(),
            );
        }
        if !(options.speedup > 0.0 && options.speedup.is_finite()) {
            return Err("--speedup must be a positive number".to_owned());
        }
        Ok(options)
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} does not take {value:?}"))
}
