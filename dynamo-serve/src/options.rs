//! Command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub(crate) const USAGE: &str = "\
dynamo-serve: an OpenAI-compatible gateway with KV-aware routing, in one process or across many

USAGE:
    dynamo-serve [FLAGS]            gateway, router and workers in one process (no flags needed)
    dynamo-serve worker [FLAGS]     one worker: its engine on the TCP request plane, registered
                                    for discovery, publishing KV events and load to NATS
    dynamo-serve frontend [FLAGS]   the gateway and router over the workers discovery reports,
                                    with KV events and load from NATS
    dynamo-serve openapi [FILE]     write the OpenAPI document (to standard output without FILE)

FLAGS (all commands):
    --host ADDR              listen address [127.0.0.1]
    --port N                 listen port [8000; worker: any free port]
    --model FILE             a llama-family GGUF file: weights, tokenizer and chat template;
                             a local path, or ORG/REPO[@REVISION]/FILE on the Hugging Face Hub
                             [SmolLM2-135M-Instruct, fetched once into the cache]
    --name NAME              the model name clients use [smollm2]
    --block-size N           KV block size in tokens, for the workers and the router [16]

FLAGS (single process and worker):
    --engine KIND            candle: the model itself, on the CPU (dynamo-candle);
                             mocker: simulated engines with a paged prefix cache and KV events,
                             answering with the prompt at a real engine's pace;
                             echo: answer max_tokens tokens at once (overhead benches) [candle]
    --speedup X              mocker workers run X times faster than real time [1]
    --kv-blocks N            KV blocks per worker [candle 512, mocker 16384]

FLAGS (single process and frontend):
    --router POLICY          kv: KV-aware, from the workers' KV events (candle, mocker);
                             approx-kv: KV-aware, from the router's own decisions;
                             round-robin [kv]
    --default-max-tokens N   max_tokens of requests that give none [256]
    --max-in-flight N        requests served at once before 503 [4096]

FLAGS (single process):
    --workers N              in-process workers behind the router [2]

FLAGS (worker and frontend):
    --nats URL               NATS for KV events and load reports (nats://HOST:PORT)
    --etcd URL               discovery through etcd (http://HOST:PORT)
    --registry DIR           discovery through a shared directory of JSON records
    --namespace NS           deployment name: etcd key prefix and NATS subject prefix [dynamo]

FLAGS (worker):
    --id N                   worker id, unique in the deployment [random]
    --lease-ttl SECONDS      etcd lease: a worker that dies leaves routing after this [5]

FLAGS (frontend):
    --worker-at [ID=]ADDR    a worker's request-plane address, instead of discovery; repeat
                             or separate with commas for several. ID is the worker's --id
                             (KV events name it); without it workers count from 1

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
    Worker,
    Frontend,
    OpenApi(Option<PathBuf>),
    Help,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Serve | Command::Help => "the single-process job",
            Command::Worker => "`dynamo-serve worker`",
            Command::Frontend => "`dynamo-serve frontend`",
            Command::OpenApi(_) => "`dynamo-serve openapi`",
        }
    }
}

impl EngineKind {
    /// How the engine is called in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            EngineKind::Candle => "candle (CPU)",
            EngineKind::Mocker => "simulated (mocker)",
            EngineKind::Echo => "echo",
        }
    }
}

impl RouterKind {
    /// How the routing is called in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RouterKind::Kv => "KV-aware routing",
            RouterKind::ApproxKv => "approximate KV-aware routing",
            RouterKind::RoundRobin => "round-robin routing",
        }
    }
}

pub(crate) struct Options {
    pub(crate) command: Command,
    pub(crate) host: IpAddr,
    /// `None`: the command's default.
    pub(crate) port: Option<u16>,
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
    pub(crate) id: Option<u64>,
    pub(crate) nats: Option<String>,
    pub(crate) etcd: Option<String>,
    pub(crate) registry: Option<PathBuf>,
    pub(crate) namespace: String,
    pub(crate) lease_ttl: u64,
    /// Static workers: (id, request-plane address).
    pub(crate) worker_at: Vec<(u64, SocketAddr)>,
}

/// The flags each command takes besides the shared ones (`--host`, `--port`, `--model`,
/// `--name`, `--block-size`) and `--help`.
const SERVE: &[&str] = &[
    "--engine",
    "--speedup",
    "--kv-blocks",
    "--router",
    "--default-max-tokens",
    "--max-in-flight",
    "--workers",
];
const WORKER: &[&str] = &[
    "--engine",
    "--speedup",
    "--kv-blocks",
    "--nats",
    "--etcd",
    "--registry",
    "--namespace",
    "--id",
    "--lease-ttl",
];
const FRONTEND: &[&str] = &[
    "--router",
    "--default-max-tokens",
    "--max-in-flight",
    "--nats",
    "--etcd",
    "--registry",
    "--namespace",
    "--worker-at",
];

impl Options {
    pub(crate) fn from_args(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Options {
            command: Command::Serve,
            host: IpAddr::from([127, 0, 0, 1]),
            port: None,
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
            id: None,
            nats: None,
            etcd: None,
            registry: None,
            namespace: "dynamo".to_owned(),
            lease_ttl: 5,
            worker_at: Vec::new(),
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
        let (command, accepted) = match args.peek().map(String::as_str) {
            Some("worker") => (Command::Worker, WORKER),
            Some("frontend") => (Command::Frontend, FRONTEND),
            _ => (Command::Serve, SERVE),
        };
        if !matches!(command, Command::Serve) {
            args.next();
        }
        options.command = command;
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                options.command = Command::Help;
                continue;
            }
            let of_another = [SERVE, WORKER, FRONTEND]
                .iter()
                .any(|flags| flags.contains(&flag.as_str()));
            if of_another && !accepted.contains(&flag.as_str()) {
                return Err(format!(
                    "{flag} is not a flag of {}",
                    options.command.name()
                ));
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--host" => options.host = parse(&flag, &value)?,
                "--port" => options.port = Some(parse(&flag, &value)?),
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
                "--id" => options.id = Some(parse(&flag, &value)?),
                "--nats" => options.nats = Some(value),
                "--etcd" => options.etcd = Some(value),
                "--registry" => options.registry = Some(PathBuf::from(value)),
                "--namespace" => options.namespace = value,
                "--lease-ttl" => options.lease_ttl = parse(&flag, &value)?,
                "--worker-at" => {
                    for part in value.split(',').filter(|part| !part.is_empty()) {
                        let next_id = options.worker_at.len() as u64 + 1;
                        let worker = match part.split_once('=') {
                            Some((id, address)) => (parse(&flag, id)?, parse(&flag, address)?),
                            None => (next_id, parse(&flag, part)?),
                        };
                        options.worker_at.push(worker);
                    }
                }
                other => return Err(format!("unknown flag {other}")),
            }
        }
        options.validate()?;
        Ok(options)
    }

    /// Reject combinations that cannot work, saying what would.
    fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("--workers must be at least 1".to_owned());
        }
        if self.kv_blocks == Some(0) {
            return Err("--kv-blocks must be at least 1".to_owned());
        }
        if !(self.speedup > 0.0 && self.speedup.is_finite()) {
            return Err("--speedup must be a positive number".to_owned());
        }
        if self.lease_ttl == 0 {
            return Err("--lease-ttl must be at least 1 second".to_owned());
        }
        let discoveries = usize::from(self.etcd.is_some())
            + usize::from(self.registry.is_some())
            + usize::from(!self.worker_at.is_empty());
        if discoveries > 1 {
            return Err("give one of --etcd, --registry and --worker-at".to_owned());
        }
        match self.command {
            Command::Frontend if discoveries == 0 => Err(
                "a frontend finds its workers through --etcd URL, --registry DIR or --worker-at ADDR"
                    .to_owned(),
            ),
            Command::Frontend if self.router == RouterKind::Kv && self.nats.is_none() => Err(
                "--router kv needs the workers' KV events: give --nats URL, or use --router approx-kv"
                    .to_owned(),
            ),
            Command::Serve if self.engine == EngineKind::Echo && self.router == RouterKind::Kv => {
                Err(
                    "echo workers publish no KV events: use --router approx-kv or round-robin"
                        .to_owned(),
                )
            }
            _ => Ok(()),
        }
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} does not take {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &str) -> Result<Options, String> {
        Options::from_args(args.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn each_command_takes_its_own_flags() {
        let worker = options("worker --engine mocker --etcd http://e:2379 --id 3").expect("valid");
        assert!(matches!(worker.command, Command::Worker));
        assert_eq!((worker.id, worker.port), (Some(3), None));
        let error = options("worker --workers 2").err().expect("refused");
        assert!(
            error.contains("--workers is not a flag of `dynamo-serve worker`"),
            "{error}"
        );
        let error = options("--etcd http://e:2379").err().expect("refused");
        assert!(
            error.contains("not a flag of the single-process job"),
            "{error}"
        );
        assert!(
            options("--bogus 1")
                .err()
                .expect("refused")
                .contains("unknown flag")
        );
    }

    #[test]
    fn a_frontend_needs_discovery_and_kv_routing_needs_nats() {
        let error = options("frontend --nats nats://n:4222")
            .err()
            .expect("refused");
        assert!(
            error.contains("--etcd URL, --registry DIR or --worker-at"),
            "{error}"
        );
        let error = options("frontend --registry /tmp/r")
            .err()
            .expect("refused");
        assert!(error.contains("--router kv needs"), "{error}");
        let error = options("frontend --registry /tmp/r --etcd http://e:2379 --nats n")
            .err()
            .expect("refused");
        assert!(error.contains("give one of"), "{error}");
        let frontend =
            options("frontend --worker-at 7=127.0.0.1:9000,127.0.0.1:9001 --router round-robin")
                .expect("valid");
        let addresses: Vec<(u64, SocketAddr)> = frontend.worker_at;
        assert_eq!(
            addresses,
            [
                (7, "127.0.0.1:9000".parse().expect("an address")),
                (2, "127.0.0.1:9001".parse().expect("an address"))
            ]
        );
    }
}
