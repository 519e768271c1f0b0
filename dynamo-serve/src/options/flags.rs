//! The flags of each command as clap structs, one per group, flattened into the commands that
//! take them; and how the parsed command becomes [`Options`].

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

use dynamo_candle::DiskTier;
use dynamo_planner::policy::{PolicyKind, SlaTargets};
use dynamo_planner::predict::PredictorKind;

use crate::planner::kubernetes::{Kubernetes, PoolDeployment, ResourceKind};

use super::busy::{Busy, BusyArgs};
use super::deployment::{DeploymentArgs, PlaneTlsArgs};
use super::values::{self, WorkerAddresses, at_least_one, number_workers, positive_number};
use super::{
    Command, DiskAdmission, EngineKind, Options, PlacementKind, RoleKind, RouterKind,
    SamplingSource,
};

/// An OpenAI-compatible gateway with KV-aware routing, in one process or across many.
///
/// Without a command: the gateway, the router and the workers in one process, on
/// 127.0.0.1:8000 (no flags needed).
///
/// Logs go to standard error; RUST_LOG chooses what is logged (default: info).
#[derive(Debug, Parser)]
#[command(name = "dynamo-serve", version, args_conflicts_with_subcommands = true)]
pub(super) struct Cli {
    #[command(subcommand)]
    command: Option<CommandArgs>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum CommandArgs {
    /// One worker: its engine on the TCP request plane, registered for discovery, publishing
    /// KV events and load to NATS
    Worker(WorkerArgs),
    /// The gateway and router over the workers that discovery reports, with their KV events
    /// and load from NATS
    Frontend(FrontendArgs),
    /// The planner: starts and stops `dynamo-serve worker` processes on this machine (or scales
    /// Kubernetes Deployments) as their load reports or the frontends' traffic reports (NATS) ask
    Planner(PlannerArgs),
    /// Measure one worker's engine (prefill by prompt length, decode by context and batch size)
    /// and write the performance profile the SLA planners plan from
    Profile(ProfileArgs),
    /// Write the OpenAPI document and exit
    Openapi {
        /// Where to write it [default: standard output]
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// The flags of the single-process job.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen port
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT)]
    port: u16,
    #[command(flatten)]
    model: ModelArgs,
    /// In-process workers behind the router
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one::<u64>)]
    workers: u64,
    /// Disaggregated serving: N in-process workers compute prompts and hand their KV blocks
    /// to the --decode-workers, instead of --workers aggregated ones
    #[arg(long, value_name = "N", conflicts_with = "workers", value_parser = at_least_one::<u64>)]
    prefill_workers: Option<u64>,
    /// Disaggregated serving: in-process workers that continue what the --prefill-workers
    /// computed
    #[arg(long, value_name = "N", default_value_t = 1, requires = "prefill_workers",
          value_parser = at_least_one::<u64>)]
    decode_workers: u64,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    busy: BusyArgs,
}

/// The flags of `dynamo-serve worker`.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// Listen port (the request plane) [default: any free port]
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    #[command(flatten)]
    model: ModelArgs,
    /// Worker id, unique in the deployment [default: random]
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// etcd lease or Kubernetes Lease: a worker that dies leaves routing after this many
    /// seconds
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LEASE_TTL,
          value_parser = at_least_one::<u64>)]
    lease_ttl: u64,
    /// What the worker does; a frontend puts prefill workers in its prefill pool and the
    /// others in its decode pool
    #[arg(long, value_name = "ROLE", value_enum, default_value_t = RoleKind::Aggregated)]
    role: RoleKind,
    /// A prefill worker's block server port, from which decode workers pull the KV blocks it
    /// hands over [default: any free port]
    #[arg(long, value_name = "N")]
    kv_port: Option<u16>,
    /// On SIGTERM: leave discovery, then finish the open streams (and, on a prefill worker,
    /// serve its hand-overs until they are pulled) for up to this many seconds before exiting
    /// (new requests are refused, and the frontend sends them elsewhere)
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_TIMEOUT)]
    drain_timeout: u64,
    /// Drain and exit, as on SIGTERM, when the process that started this one exits
    /// (`dynamo-serve planner` passes it: a planner killed outright leaves no workers behind)
    #[arg(long)]
    exit_with_parent: bool,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    plane_tls: PlaneTlsArgs,
}

/// The flags of `dynamo-serve frontend`.
#[derive(Debug, Args)]
struct FrontendArgs {
    /// Listen port
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT)]
    port: u16,
    #[command(flatten)]
    model: ModelArgs,
    /// A worker's request-plane address, instead of discovery
    ///
    /// Repeat, or separate with commas, for several. ID is the worker's --id (KV events name
    /// it); without it workers count from 1.
    #[arg(long, value_name = "[ID=]ADDR",
          conflicts_with_all = ["etcd", "registry", "kubernetes_discovery"])]
    worker_at: Vec<WorkerAddresses>,
    /// An engine server to route to directly, beside the discovered workers
    ///
    /// KIND is vllm (token ids over its OpenAI-compatible API, its load from /metrics), sglang
    /// (token ids over its native /generate, its load from /metrics), trtllm (token ids over
    /// trtllm-serve's OpenAI-compatible API, its load from /metrics) or openai (any
    /// OpenAI-compatible /v1/completions; its text is tokenized by the gateway). events=ADDR
    /// is a vLLM or SGLang server's ZMQ KV-event publisher (replay=ADDR its replay socket);
    /// for trtllm, events=poll polls its POST /kv_cache_events every 100 ms (events=poll:MS:
    /// every MS).
    /// model=NAME its --served-model-name (default: --name), id=N its worker id (default:
    /// 1000000 plus its position). For openai, format=response_format or format=json_schema
    /// (llama.cpp's server) names the field it enforces an output format from; without it a
    /// request with response_format is refused. For vllm, dp=N routes to each engine of a
    /// server started with --data-parallel-size N as a worker of its own (ID/0 to ID/N-1;
    /// requests pinned with X-data-parallel-rank, each engine's load and KV events, from
    /// the events port plus its rank). Repeat for several.
    #[arg(long, value_name = "KIND=URL[,events=ADDR]")]
    engine_at: Vec<super::EngineAt>,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    busy: BusyArgs,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    plane_tls: PlaneTlsArgs,
}

/// The flags of `dynamo-serve planner`.
#[derive(Debug, Args)]
struct PlannerArgs {
    /// Seconds between planning steps
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = positive_number)]
    interval: f64,
    /// Fewest workers
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one::<usize>)]
    min_workers: usize,
    /// Most workers
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = at_least_one::<usize>)]
    max_workers: usize,
    /// Most GPUs in all pools together, each worker counting its --worker-gpus (or
    /// --prefill-gpus, --decode-gpus) [default: --max-workers of each pool]
    #[arg(long, value_name = "GPUS", value_parser = at_least_one::<usize>)]
    budget: Option<usize>,
    /// GPUs one aggregated worker holds (its tensor-parallel size), against --budget
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one::<usize>,
          conflicts_with = "disaggregated")]
    worker_gpus: usize,
    /// GPUs one prefill worker holds, against --budget (with --disaggregated)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one::<usize>,
          requires = "disaggregated")]
    prefill_gpus: usize,
    /// GPUs one decode worker holds, against --budget (with --disaggregated)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one::<usize>,
          requires = "disaggregated")]
    decode_gpus: usize,
    /// The load predictor: constant, moving_average (moving_average:N averages N intervals),
    /// kalman, or holt_winters (holt_winters:N for a season of N intervals)
    #[arg(long, value_name = "NAME", default_value = "constant")]
    predictor: PredictorKind,
    /// Only log the decisions; start no worker beyond --min-workers
    #[arg(long)]
    advisory: bool,
    /// Plan a prefill pool and a decode pool (workers started with --role prefill and --role
    /// decode), each between --min-workers and --max-workers
    #[arg(long)]
    disaggregated: bool,
    /// How to size the pool: `load` (the workers' queues and KV usage), `sla` (ours) or
    /// `dynamo_sla` (NVIDIA Dynamo's), the SLA policies from the frontends' traffic reports
    /// and --profile
    #[arg(long, value_name = "POLICY", default_value = "load")]
    policy: PolicyKind,
    /// What one worker achieves, for the SLA policies: a profile `dynamo-serve profile --out
    /// FILE` (a live engine) or `dynamo-replay profile --out FILE` (the mocker) writes
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// The SLA policies' time-to-first-token target, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 500.0, value_parser = positive_number)]
    ttft_ms: f64,
    /// The SLA policies' target time between output tokens, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 50.0, value_parser = positive_number)]
    itl_ms: f64,
    /// The id of the first worker started; the next ones count up from it
    #[arg(long, value_name = "N", default_value_t = 1)]
    first_id: u64,
    /// Seconds a stopped worker is given to drain when the planner stops
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_TIMEOUT)]
    drain_timeout: u64,
    /// Seconds a pool waits before it starts workers again after one failed to start (it
    /// could not be spawned, or exited before discovery listed it), twice as long after each
    /// further failed try; 0 tries again at the next step
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    restart_backoff: u64,
    /// The longest of those waits, in seconds (at least --restart-backoff)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    restart_backoff_max: u64,
    /// Serve the planner's metrics (its decisions, forecasts, ready workers, and steps unheard
    /// or skipped) as Prometheus text on http://ADDR/metrics, for example 127.0.0.1:9090
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Scale Kubernetes Deployments rather than start workers: NAME for the aggregated pool,
    /// prefill=NAME and decode=NAME with --disaggregated. Their pods run `dynamo-serve worker`
    /// registered in --etcd (or --kubernetes-discovery) and reporting to --nats; the client is
    /// configured as kubectl's (KUBECONFIG, ~/.kube/config or the pod's service account). Needs
    /// a dynamo-serve built with --features kube
    #[arg(long, value_name = "[POOL=]NAME")]
    kubernetes_deployment: Vec<PoolDeployment>,
    /// Scale custom resources of this kind through their scale subresource rather than
    /// Deployments: the --kubernetes-deployment names are of objects of this kind, given as
    /// PLURAL.VERSION.GROUP (dynamographdeployments.v1alpha1.nvidia.com)
    #[arg(
        long,
        value_name = "PLURAL.VERSION.GROUP",
        requires = "kubernetes_deployment"
    )]
    kubernetes_resource: Option<ResourceKind>,
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// Flags of every `dynamo-serve worker` started (after `--`); the planner adds --id,
    /// --etcd or --registry, --nats, --namespace, --exit-with-parent and, with
    /// --disaggregated, --role
    #[arg(
        last = true,
        value_name = "WORKER FLAGS",
        conflicts_with = "kubernetes_deployment"
    )]
    worker_flags: Vec<OsString>,
}

/// The flags of `dynamo-serve profile`.
#[derive(Debug, Args)]
struct ProfileArgs {
    /// Where to write the profile (JSON, as `dynamo-serve planner --profile` reads it)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Prompt lengths of the prefill table, one request at a time
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          default_values_t = [128_u64, 256, 512, 1024, 2048])]
    input_tokens: Vec<u64>,
    /// Context lengths of the decode table
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          default_values_t = [256_u64, 1024, 2048])]
    context_tokens: Vec<u64>,
    /// Batch sizes of the decode table; each context's row also ends at the largest batch the
    /// engine holds (its KV blocks, and the requests it runs at once)
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          default_values_t = [1_u32, 2, 4, 8])]
    concurrency: Vec<u32>,
    /// Output tokens of each decode request
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = at_least_one::<u32>)]
    decode_steps: u32,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The address and the model: the flags of every command but `openapi`.
#[derive(Debug, Args)]
struct ModelArgs {
    /// Listen address
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: IpAddr,
    /// A llama-family GGUF file: weights, tokenizer and chat template
    ///
    /// A local path, or ORG/REPO/FILE (or ORG/REPO@REVISION/FILE) on the Hugging Face Hub
    /// (fetched once into its cache) [default: SmolLM2-135M-Instruct, fetched once into the
    /// dynamo cache]
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The model name clients use
    #[arg(long, value_name = "NAME", default_value = "smollm2")]
    name: String,
    /// KV block size in tokens, for the workers and the router
    #[arg(long, value_name = "N", default_value_t = 16)]
    block_size: u32,
}

/// The engines' flags: the single-process job and the worker.
#[derive(Debug, Args)]
#[command(next_help_heading = "Engine")]
struct EngineArgs {
    /// What the workers run
    #[arg(long, value_name = "KIND", value_enum, default_value_t = EngineKind::Candle)]
    engine: EngineKind,
    /// Mocker workers run X times faster than real time
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = positive_number)]
    speedup: f64,
    /// KV blocks per worker [default: candle 512, mocker 16384]
    #[arg(long, value_name = "N", value_parser = at_least_one::<u32>)]
    kv_blocks: Option<u32>,
    /// The most requests a worker runs at once, as vLLM's --max-num-seqs; the rest wait
    /// [default: candle 16, mocker 256]
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    max_running: Option<usize>,
    /// Candle workers keep blocks evicted from their KV cache in N blocks of host memory, and
    /// onboard them for a returning prompt instead of recomputing it (0: no host tier)
    #[arg(long, value_name = "N", default_value_t = 0)]
    host_cache_blocks: u32,
    /// Candle workers keep blocks evicted from the host tier in a file in DIR, one per worker
    #[arg(long, value_name = "DIR")]
    disk_cache: Option<PathBuf>,
    /// Blocks of each worker's --disk-cache file
    #[arg(long, value_name = "N", default_value_t = 1024, requires = "disk_cache",
          value_parser = at_least_one::<u32>)]
    disk_cache_blocks: u32,
    /// Which blocks the --disk-cache tier writes: every block the host tier evicts, or only
    /// those evicted a second time (prefixes seen once never wear the disk)
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = DiskAdmission::All,
          requires = "disk_cache")]
    disk_cache_admission: DiskAdmission,
}

/// The gateway's flags: the single-process job and the frontend.
#[derive(Debug, Args)]
#[command(next_help_heading = "Gateway")]
struct GatewayArgs {
    /// How the router picks a worker
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = RouterKind::Kv)]
    router: RouterKind,
    /// With prefill workers: where each request's prompt is computed (conditional
    /// disaggregation); a request falls back to its decode worker when no prefill worker is
    /// free or a prefill fails
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = PlacementKind::AlwaysRemote)]
    placement: PlacementKind,
    /// max_tokens of requests that give none
    #[arg(long, value_name = "N", default_value_t = 256)]
    default_max_tokens: u32,
    /// Requests served at once before 503
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_in_flight: usize,
    /// API keys, one a line: clients must send `Authorization: Bearer KEY` (401 otherwise).
    /// DYNAMO_API_KEYS (comma separated) adds more; with neither, the gateway is open
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Serve /metrics without an API key (the health probes never need one)
    #[arg(long)]
    open_metrics: bool,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The largest request body accepted, in bytes (413 beyond)
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    body_limit: usize,
    /// Memory for stored responses (/v1/responses, for previous_response_id and GET), in MiB
    /// of their JSON: the oldest are dropped to make room; 0 stores none
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    response_store_mib: usize,
    /// Keep stored responses in this object store instead of memory, shared by every frontend
    /// given the same one: file:///a/shared/folder, or s3://bucket/prefix (with the s3
    /// feature; credentials, region and endpoint from the AWS_* variables)
    #[arg(long, value_name = "URL", conflicts_with = "response_store_mib",
          value_parser = |text: &str| crate::response_store::parse_url(text).map(Box::new))]
    response_store: Option<Box<url::Url>>,
    /// The model served at /v1/embeddings: `all-minilm-l6-v2` (all-MiniLM-L6-v2, fetched once
    /// into the dynamo cache), a BERT model's directory (config.json, model.safetensors,
    /// tokenizer.json; served under the directory's name), or `none`
    #[arg(long, value_name = "MODEL", default_value = "all-minilm-l6-v2")]
    embedding_model: crate::embedding::EmbeddingSource,
    /// How many times a request whose worker fails mid-stream continues on another worker
    /// (0: never)
    #[arg(long, value_name = "N", default_value_t = 3)]
    migration_limit: u32,
    /// Send a request that a worker refused before its first token (overloaded, such as an
    /// engine server's 503) through the router again, up to N more times, 50 ms apart, within
    /// a budget of a fifth of the requests plus 10 a second (0: no retries)
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// A worker that sends no token for this many seconds (first token or between tokens) has
    /// its request continued elsewhere and leaves routing until it answers a canary (0: never).
    /// Above the longest honest wait: a CPU model's first token under load can take a minute
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    stall_timeout: u64,
    /// A stalled or failing worker leaves routing only while fewer than this share of the
    /// workers, in percent, are out (one always may be): an overload that slows every worker
    /// cannot eject them all
    #[arg(long, value_name = "PERCENT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    max_ejected_percent: u32,
    /// Put a circuit breaker on each worker: after this many failures in a row it refuses the
    /// worker's requests at once for `--breaker-cool-down` seconds, then lets one probe through
    /// [default: no breaker]
    #[arg(long, value_name = "N", value_parser = at_least_one::<u32>)]
    breaker_failures: Option<u32>,
    /// Open the breaker too once FAILURES of a worker's last WINDOW outcomes failed, in a row or
    /// not (a worker failing one request in two), such as 10/20
    #[arg(long, value_name = "FAILURES/WINDOW", value_parser = values::failure_rate)]
    breaker_failure_rate: Option<dynamo_core::layers::FailureRate>,
    /// How long an open breaker refuses its worker's requests
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    breaker_cool_down: u64,
    /// Each request ends with a 504 (`timeout`) after this many seconds, migrations included,
    /// and its work is cancelled on the worker, which is told the time left (0: no limit)
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    request_timeout: u64,
    /// On SIGTERM: stop accepting connections, then finish the open streams for up to this
    /// many seconds before exiting
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_TIMEOUT)]
    drain_timeout: u64,
    /// The temperature and top_p of requests that give none
    #[arg(long, value_name = "FROM", value_enum, default_value_t = SamplingSource::Model)]
    sampling_defaults: SamplingSource,
}

/// The port of the gateway.
const DEFAULT_PORT: u16 = 8000;

/// The worker's etcd lease, in seconds.
const DEFAULT_LEASE_TTL: u64 = 5;

/// How long a process stopped by SIGTERM finishes its open streams, in seconds.
const DEFAULT_DRAIN_TIMEOUT: u64 = 30;

impl Cli {
    /// The options the parsed command asks for, not yet validated.
    pub(super) fn into_options(self) -> Options {
        match self.command {
            None => serve(Command::Serve, self.serve),
            Some(CommandArgs::Openapi { file }) => serve(Command::OpenApi(file), defaults()),
            Some(CommandArgs::Profile(args)) => {
                let settings = crate::profile::Settings {
                    out: args.out,
                    input_tokens: args.input_tokens,
                    context_tokens: args.context_tokens,
                    concurrency: args.concurrency,
                    decode_steps: args.decode_steps,
                };
                let command = Command::Profile(Box::new(settings));
                options(command, args.model, args.engine, defaults(), defaults())
            }
            Some(CommandArgs::Planner(args)) => {
                let settings = crate::planner::Settings {
                    interval_s: args.interval,
                    min_workers: args.min_workers,
                    max_workers: args.max_workers,
                    budget: args.budget,
                    gpus: dynamo_planner::WorkerGpus {
                        aggregated: args.worker_gpus,
                        prefill: args.prefill_gpus,
                        decode: args.decode_gpus,
                    },
                    predictor: args.predictor,
                    advisory: args.advisory,
                    policy: args.policy,
                    profile: args.profile,
                    targets: SlaTargets {
                        ttft_ms: args.ttft_ms,
                        itl_ms: args.itl_ms,
                    },
                    first_id: args.first_id,
                    metrics_addr: args.metrics_addr,
                    restart_backoff: dynamo_planner::local::RestartBackoff::new(
                        std::time::Duration::from_secs(args.restart_backoff),
                        std::time::Duration::from_secs(args.restart_backoff_max),
                    ),
                    worker_flags: args.worker_flags,
                    disaggregated: args.disaggregated,
                    kubernetes: (!args.kubernetes_deployment.is_empty()).then_some(Kubernetes {
                        namespace: args.deployment.kubernetes_namespace.clone(),
                        deployments: args.kubernetes_deployment,
                        resource: args.kubernetes_resource,
                    }),
                };
                let command = Command::Planner(Box::new(settings));
                let mut options =
                    options(command, defaults(), defaults(), defaults(), args.deployment);
                options.drain_timeout = args.drain_timeout;
                options
            }
            Some(CommandArgs::Worker(args)) => {
                let mut options = options(
                    Command::Worker,
                    args.model,
                    args.engine,
                    defaults(),
                    args.deployment,
                );
                options.port = args.port;
                options.workers = 1;
                options.id = args.id;
                options.lease_ttl = args.lease_ttl;
                options.role = args.role;
                options.kv_port = args.kv_port;
                options.drain_timeout = args.drain_timeout;
                options.exit_with_parent = args.exit_with_parent;
                options.plane_tls = args.plane_tls.files();
                options
            }
            Some(CommandArgs::Frontend(args)) => {
                let mut options = options(
                    Command::Frontend,
                    args.model,
                    defaults(),
                    args.gateway,
                    args.deployment,
                );
                options.port = Some(args.port);
                options.workers = 0;
                options.worker_at = number_workers(&args.worker_at);
                options.engine_at = args.engine_at;
                options.plane_tls = args.plane_tls.files();
                options.busy = args.busy.into();
                options
            }
        }
    }
}

fn serve(command: Command, args: ServeArgs) -> Options {
    let mut options = options(command, args.model, args.engine, args.gateway, defaults());
    options.port = Some(args.port);
    options.workers = args.workers;
    options.busy = args.busy.into();
    if let Some(prefill) = args.prefill_workers {
        options.prefill_workers = prefill;
        options.decode_workers = args.decode_workers;
        options.workers = prefill + args.decode_workers;
    }
    options
}

/// The options of these groups, with every other setting at its default.
fn options(
    command: Command,
    model: ModelArgs,
    engine: EngineArgs,
    gateway: GatewayArgs,
    deployment: DeploymentArgs,
) -> Options {
    Options {
        command,
        host: model.host,
        port: None,
        workers: 1,
        prefill_workers: 0,
        decode_workers: 0,
        placement: gateway.placement,
        role: RoleKind::Aggregated,
        kv_port: None,
        engine: engine.engine,
        router: gateway.router,
        speedup: engine.speedup,
        model: model.model,
        name: model.name,
        block_size: model.block_size,
        kv_blocks: engine.kv_blocks,
        max_running: engine.max_running,
        host_cache_blocks: engine.host_cache_blocks,
        disk_cache: engine.disk_cache.map(|dir| DiskTier {
            dir,
            blocks: engine.disk_cache_blocks,
            repeats_only: engine.disk_cache_admission == DiskAdmission::SeenTwice,
        }),
        default_max_tokens: gateway.default_max_tokens,
        max_in_flight: gateway.max_in_flight,
        api_key_file: gateway.api_key_file,
        open_metrics: gateway.open_metrics,
        edge_tls: gateway
            .tls_cert
            .zip(gateway.tls_key)
            .map(|(cert, key)| crate::tls::EdgeFiles { cert, key }),
        plane_tls: None,
        body_limit: gateway.body_limit,
        response_store_bytes: gateway.response_store_mib.saturating_mul(1 << 20),
        response_store: gateway.response_store.map(|url| *url),
        embedding_model: gateway.embedding_model,
        migration_limit: gateway.migration_limit,
        retries: gateway.retries,
        stall_timeout: gateway.stall_timeout,
        max_ejected_percent: gateway.max_ejected_percent,
        breaker: breaker(
            gateway.breaker_failures,
            gateway.breaker_failure_rate,
            gateway.breaker_cool_down,
        ),
        request_timeout: gateway.request_timeout,
        drain_timeout: gateway.drain_timeout,
        exit_with_parent: false,
        sampling_defaults: gateway.sampling_defaults,
        id: None,
        nats_access: deployment.nats_access(),
        etcd_access: deployment.etcd_access(),
        nats: deployment.nats,
        etcd: deployment.etcd,
        registry: deployment.registry,
        kubernetes_discovery: deployment.kubernetes_discovery,
        kubernetes_namespace: deployment.kubernetes_namespace,
        namespace: deployment.namespace,
        lease_ttl: DEFAULT_LEASE_TTL,
        worker_at: Vec::new(),
        engine_at: Vec::new(),
        busy: Busy::default(),
    }
}

/// The circuit breaker of `--breaker-failures`, `--breaker-failure-rate` and
/// `--breaker-cool-down`: none unless one of the first two is given.
fn breaker(
    in_a_row: Option<u32>,
    rate: Option<dynamo_core::layers::FailureRate>,
    cool_down: u64,
) -> Option<dynamo_core::layers::CircuitBreakerConfig> {
    if in_a_row.is_none() && rate.is_none() {
        return None;
    }
    let config = dynamo_core::layers::CircuitBreakerConfig::default()
        // With a rate alone, failures in a row open it only by filling the window.
        .failure_threshold(in_a_row.unwrap_or(u32::MAX))
        .cool_down(std::time::Duration::from_secs(cool_down));
    Some(match rate {
        Some(rate) => config.failure_rate(rate.failures, rate.window),
        None => config,
    })
}

/// A group's flags as they are when none is given.
fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = command.get_matches_from(std::iter::empty::<OsString>());
    T::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}
