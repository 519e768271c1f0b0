//! Command-line flags, parsed with clap.
//!
//! Each group of flags is one struct (the model, the engine, the gateway, the deployment),
//! flattened into the commands that take it (`flags.rs`), so that each command's `--help`
//! lists its own flags and a flag of another command is refused, naming the commands that take
//! it (`errors.rs`). The parsed command then becomes one [`Options`], the shape the rest of
//! the binary reads, with the defaults where a command has no such flag.

mod busy;
mod deployment;
mod engine_at;
mod errors;
mod flags;
mod values;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Parser, ValueEnum};
use dynamo_candle::DiskTier;

pub(crate) use busy::Busy;
pub(crate) use engine_at::{EngineAt, UpstreamKind};
use errors::{error_of, named_command, with_owners, with_usage};
use flags::Cli;

/// Which engine the in-process workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineKind {
    /// The model itself, on the CPU (dynamo-candle)
    Candle,
    /// Simulated engines with a paged prefix cache and KV events, answering with the prompt at
    /// a real engine's pace (dynamo-mocker)
    Mocker,
    /// Answer max_tokens tokens at once, publishing no KV events (overhead benches)
    Echo,
}

/// How the router picks a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RouterKind {
    /// KV-aware, from the workers' KV events (candle, mocker)
    Kv,
    /// KV-aware, from the router's own decisions
    ApproxKv,
    /// Each worker in turn
    RoundRobin,
}

/// Where the sampling of requests that give no temperature or top_p comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SamplingSource {
    /// The model's recommendation: the embedded SmolLM2 card recommends temperature 0.2,
    /// top_p 0.9; a --model file's comes from its GGUF metadata (general.sampling.temp, top_p
    /// and top_k), and there is none when the file has no such keys
    Model,
    /// The engine's own defaults (the candle engine samples at temperature 1, as OpenAI does)
    #[value(name = "none")]
    Off,
}

/// `--placement`: where a disaggregated request's prompt is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlacementKind {
    /// On a prefill worker whenever one is free (NVIDIA Dynamo's disaggregated serving)
    AlwaysRemote,
    /// On the decode worker when it would compute at most 1000 tokens or a tenth of the prompt,
    /// or the prefill worker has 2 prompts in hand (Dynamo's conditional disaggregation)
    Threshold,
    /// Where the expected time to first token, with the stall of running decodes, is lower
    ExpectedTtft,
    /// As expected-ttft, and a prefill worker with nothing in hand serves the whole request
    /// (prompt and decode) when that costs no more than the decode worker computing the prompt
    Flexible,
    /// The whole request on the prefill or the decode candidate, whichever the router's
    /// expected-TTFT cost prefers: the two pools serve as one aggregated pool would
    RouterCost,
    /// On the decode worker only while it decodes nothing and the router's expected-TTFT cost
    /// prefers it; otherwise on a prefill worker, so no prompt joins running decodes
    StallFree,
}

/// `--role`: what a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleKind {
    /// Prefill and decode
    Aggregated,
    /// Compute prompts and hand their KV blocks over (serves them on --kv-port)
    Prefill,
    /// Continue requests whose prompt a prefill worker computed, pulling its KV blocks
    Decode,
}

/// `--disk-cache-admission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DiskAdmission {
    /// Every block the tier above evicts
    All,
    /// Only blocks offered a second time within a window as large as the tier
    SeenTwice,
}

/// The command to run.
#[derive(Debug)]
pub(crate) enum Command {
    Serve,
    Worker,
    Frontend,
    Planner(Box<crate::planner::Settings>),
    Profile(Box<crate::profile::Settings>),
    OpenApi(Option<PathBuf>),
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

impl PlacementKind {
    /// How the placement is called in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            PlacementKind::AlwaysRemote => "always-remote",
            PlacementKind::Threshold => "threshold",
            PlacementKind::ExpectedTtft => "expected-TTFT",
            PlacementKind::Flexible => "flexible expected-TTFT",
            PlacementKind::RouterCost => "router-cost",
            PlacementKind::StallFree => "stall-free",
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

/// Every command's settings, with the defaults where a command has no such flag.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) command: Command,
    pub(crate) host: IpAddr,
    /// `None`: the command's default.
    pub(crate) port: Option<u16>,
    pub(crate) workers: u64,
    /// Disaggregated single process: prefill workers (0: aggregated).
    pub(crate) prefill_workers: u64,
    /// Disaggregated single process: decode workers.
    pub(crate) decode_workers: u64,
    pub(crate) placement: PlacementKind,
    /// A worker's role.
    pub(crate) role: RoleKind,
    /// A prefill worker's block server port (`None`: any free port).
    pub(crate) kv_port: Option<u16>,
    pub(crate) engine: EngineKind,
    pub(crate) router: RouterKind,
    pub(crate) speedup: f64,
    pub(crate) model: Option<PathBuf>,
    pub(crate) name: String,
    pub(crate) block_size: u32,
    pub(crate) kv_blocks: Option<u32>,
    /// The most requests each worker runs at once, if not its engine's default.
    pub(crate) max_running: Option<usize>,
    /// Blocks of each candle worker's host tier (0: none).
    pub(crate) host_cache_blocks: u32,
    /// Each candle worker's disk tier.
    pub(crate) disk_cache: Option<DiskTier>,
    pub(crate) default_max_tokens: u32,
    pub(crate) max_in_flight: usize,
    /// API keys, one a line (`DYNAMO_API_KEYS` adds more).
    pub(crate) api_key_file: Option<PathBuf>,
    /// `/metrics` without a key.
    pub(crate) open_metrics: bool,
    /// HTTPS on the gateway.
    pub(crate) edge_tls: Option<crate::tls::EdgeFiles>,
    /// TLS on the request plane (worker and frontend).
    pub(crate) plane_tls: Option<crate::tls::PlaneFiles>,
    /// The largest request body, in bytes.
    pub(crate) body_limit: usize,
    /// Memory for stored responses, in bytes.
    pub(crate) response_store_bytes: usize,
    /// The object store for stored responses, instead of memory.
    pub(crate) response_store: Option<url::Url>,
    /// The model served at `/v1/embeddings`.
    pub(crate) embedding_model: crate::embedding::EmbeddingSource,
    /// Continuations of a request whose worker fails mid-stream.
    pub(crate) migration_limit: u32,
    /// Retries of a request refused before its first token (0: none).
    pub(crate) retries: u32,
    /// Seconds without a token before an attempt ends and its worker is ejected (0: never).
    pub(crate) stall_timeout: u64,
    /// The share of the workers, in percent, past which no more are ejected.
    pub(crate) max_ejected_percent: u32,
    /// The circuit breaker on each worker's engine, if any.
    pub(crate) breaker: Option<dynamo_core::layers::CircuitBreakerConfig>,
    /// Seconds before a request ends with a timeout, its work cancelled (0: never).
    pub(crate) request_timeout: u64,
    /// Seconds a process stopped by SIGTERM finishes its open streams.
    pub(crate) drain_timeout: u64,
    /// A worker drains and exits when the process that started it exits.
    pub(crate) exit_with_parent: bool,
    pub(crate) sampling_defaults: SamplingSource,
    pub(crate) id: Option<u64>,
    pub(crate) nats: Option<String>,
    /// NATS credentials and TLS beyond what the URL says.
    pub(crate) nats_access: dynamo_transport::events::NatsAccess,
    pub(crate) etcd: Option<String>,
    /// etcd TLS beyond what the URL says.
    pub(crate) etcd_access: dynamo_transport::discovery::EtcdAccess,
    pub(crate) registry: Option<PathBuf>,
    /// Workers register as Kubernetes Leases (`--kubernetes-discovery`).
    pub(crate) kubernetes_discovery: bool,
    /// The namespace of the Leases and of the planner's Kubernetes objects.
    pub(crate) kubernetes_namespace: Option<String>,
    pub(crate) namespace: String,
    pub(crate) lease_ttl: u64,
    /// Static workers: (id, request-plane address).
    pub(crate) worker_at: Vec<(u64, SocketAddr)>,
    /// Engine servers routed to directly (`--engine-at`).
    pub(crate) engine_at: Vec<EngineAt>,
    /// The routers' busy thresholds and wait queue.
    pub(crate) busy: Busy,
}

impl Options {
    /// The options of this process's command line; on an error, or after `--help`, print
    /// what clap says and exit (status 2 for an error).
    pub(crate) fn parse() -> Self {
        Options::try_parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// The options of `args` (the binary's name first), or the error clap would print.
    pub(crate) fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let named = named_command(&args);
        Cli::try_parse_from(&args)
            .map_err(|error| with_owners(with_usage(error, named)))
            .and_then(|cli| {
                let options = cli.into_options();
                options.validate()?;
                Ok(options)
            })
    }

    /// How the routers watch their workers: `--stall-timeout`, `--max-ejected-percent`, and
    /// canaries for the served model.
    pub(crate) fn health(&self) -> dynamo_router::HealthConfig {
        let stall_timeout =
            (self.stall_timeout > 0).then(|| std::time::Duration::from_secs(self.stall_timeout));
        dynamo_router::HealthConfig::default()
            .stall_timeout(stall_timeout)
            .max_ejected_percent(self.max_ejected_percent)
            .canary_model(self.name.clone())
    }

    /// Whether the gateway's engines are the single process's own candle workers (not behind
    /// prefill workers): they fork a request's choices from one prefill and compute the
    /// log-probabilities of a prompt.
    pub(crate) fn own_candle_workers(&self) -> bool {
        matches!(self.command, Command::Serve)
            && self.engine == EngineKind::Candle
            && self.prefill_workers == 0
    }

    /// Whether every engine behind this gateway computes the log-probabilities of a prompt, so
    /// that it may offer `echo` with `logprobs` and `prompt_logprobs`: the single process's own
    /// candle workers (not behind prefill workers), or a frontend whose only engines are vLLM
    /// and SGLang servers (`--engine-at vllm=…`, `sglang=…`, and no workers from discovery or
    /// `--worker-at`).
    pub(crate) fn computes_prompt_logprobs(&self) -> bool {
        let discovered = self.etcd.is_some()
            || self.registry.is_some()
            || self.kubernetes_discovery
            || !self.worker_at.is_empty();
        let only_scoring_servers = matches!(self.command, Command::Frontend)
            && !discovered
            && !self.engine_at.is_empty()
            && self
                .engine_at
                .iter()
                .all(|server| matches!(server.kind, UpstreamKind::Vllm | UpstreamKind::Sglang));
        self.own_candle_workers() || only_scoring_servers
    }

    /// The routers' busy thresholds, for this command's workers.
    pub(crate) fn busy_thresholds(&self) -> Result<dynamo_router::BusyThresholds, String> {
        self.busy.thresholds(self.kv_caches())
    }

    /// What the routers know of their workers' KV caches: in the single process, each
    /// in-process worker's blocks, as `engines::start_engine` sizes its cache (none for echo
    /// workers); in the frontend, each worker's as it reports it at run time.
    fn kv_caches(&self) -> busy::KvCaches {
        use busy::KvCaches;
        match (&self.command, self.engine) {
            (Command::Frontend, _) => KvCaches::Reported,
            (Command::Serve, EngineKind::Candle) => KvCaches::Each(u64::from(
                self.kv_blocks
                    .unwrap_or(dynamo_candle::CandleConfig::default().blocks),
            )),
            (Command::Serve, EngineKind::Mocker) => {
                KvCaches::Each(self.kv_blocks.map_or(16_384, u64::from))
            }
            _ => KvCaches::Unknown,
        }
    }

    /// Reject combinations that cannot work, saying what would.
    fn validate(&self) -> Result<(), clap::Error> {
        if let Err(message) = self.busy_thresholds() {
            let name = match self.command {
                Command::Frontend => "frontend",
                _ => "",
            };
            return Err(error_of(name, ErrorKind::ArgumentConflict, &message));
        }
        if let Command::Planner(ref settings) = self.command
            && let Some(message) = settings.unaffordable()
        {
            return Err(error_of("planner", ErrorKind::ArgumentConflict, &message));
        }
        if let Command::Planner(ref settings) = self.command
            && let Some(message) = settings.kubernetes_unusable()
        {
            return Err(error_of("planner", ErrorKind::ArgumentConflict, &message));
        }
        let command = match self.command {
            Command::Worker => "worker",
            Command::Frontend => "frontend",
            Command::Planner(_) => "planner",
            _ => "",
        };
        if self.kubernetes_discovery && !cfg!(feature = "kube") {
            return Err(error_of(
                command,
                ErrorKind::InvalidValue,
                crate::kubernetes::WITHOUT_KUBE,
            ));
        }
        let planned_objects = matches!(&self.command,
            Command::Planner(settings) if settings.kubernetes.is_some());
        if self.kubernetes_namespace.is_some() && !self.kubernetes_discovery && !planned_objects {
            return Err(error_of(
                command,
                ErrorKind::MissingRequiredArgument,
                "--kubernetes-namespace names the namespace of --kubernetes-discovery's Leases or of the planner's --kubernetes-deployment objects: give one of them",
            ));
        }
        let discovered =
            self.etcd.is_some() || self.registry.is_some() || self.kubernetes_discovery;
        match self.command {
            Command::Frontend
                if !discovered && self.worker_at.is_empty() && self.engine_at.is_empty() =>
            {
                Err(error_of(
                    "frontend",
                    ErrorKind::MissingRequiredArgument,
                    "a frontend finds its workers through --etcd URL, --registry DIR, --kubernetes-discovery or --worker-at ADDR, or routes to engine servers given with --engine-at",
                ))
            }
            Command::Frontend
                if self.router == RouterKind::Kv
                    && self.nats.is_none()
                    && !self.engine_at.iter().any(|engine| engine.events.is_some()) =>
            {
                Err(error_of(
                    "frontend",
                    ErrorKind::MissingRequiredArgument,
                    "--router kv needs the workers' KV events: give --nats URL, an --engine-at with events=ADDR, or use --router approx-kv",
                ))
            }
            Command::Planner(_) if !discovered || self.nats.is_none() => Err(error_of(
                "planner",
                ErrorKind::MissingRequiredArgument,
                "the planner counts the workers registered in --etcd URL, --registry DIR or --kubernetes-discovery and reads their load from --nats URL",
            )),
            Command::Planner(ref settings) if settings.min_workers > settings.max_workers => {
                Err(error_of(
                    "planner",
                    ErrorKind::ArgumentConflict,
                    "--min-workers is above --max-workers",
                ))
            }
            Command::Planner(ref settings)
                if settings.policy.needs_profile() && settings.profile.is_none() =>
            {
                Err(error_of(
                    "planner",
                    ErrorKind::MissingRequiredArgument,
                    "the SLA policies plan from what one worker achieves: give --profile FILE (dynamo-serve profile --out FILE or dynamo-replay profile --out FILE writes one)",
                ))
            }
            Command::Serve if self.engine == EngineKind::Echo && self.router == RouterKind::Kv => {
                Err(error_of(
                    "",
                    ErrorKind::ArgumentConflict,
                    "echo workers publish no KV events: use --router approx-kv or round-robin",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
