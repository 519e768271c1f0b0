//! Command-line flags, parsed with clap.
//!
//! Each group of flags is one struct (the model, the engine, the gateway, the deployment),
//! flattened into the commands that take it (`flags.rs`), so that each command's `--help`
//! lists its own flags and a flag of another command is refused, naming the commands that take
//! it (`errors.rs`). The parsed command then becomes one [`Options`], the shape the rest of
//! the binary reads, with the defaults where a command has no such flag.

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
    /// The model served at `/v1/embeddings`.
    pub(crate) embedding_model: crate::embedding::EmbeddingSource,
    /// Continuations of a request whose worker fails mid-stream.
    pub(crate) migration_limit: u32,
    /// Seconds without a token before an attempt ends and its worker is ejected (0: never).
    pub(crate) stall_timeout: u64,
    /// Seconds before a request ends with a timeout, its work cancelled (0: never).
    pub(crate) request_timeout: u64,
    /// Seconds a process stopped by SIGTERM finishes its open streams.
    pub(crate) drain_timeout: u64,
    pub(crate) sampling_defaults: SamplingSource,
    pub(crate) id: Option<u64>,
    pub(crate) nats: Option<String>,
    /// NATS credentials and TLS beyond what the URL says.
    pub(crate) nats_access: dynamo_transport::events::NatsAccess,
    pub(crate) etcd: Option<String>,
    /// etcd TLS beyond what the URL says.
    pub(crate) etcd_access: dynamo_transport::discovery::EtcdAccess,
    pub(crate) registry: Option<PathBuf>,
    pub(crate) namespace: String,
    pub(crate) lease_ttl: u64,
    /// Static workers: (id, request-plane address).
    pub(crate) worker_at: Vec<(u64, SocketAddr)>,
    /// Engine servers routed to directly (`--engine-at`).
    pub(crate) engine_at: Vec<EngineAt>,
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

    /// Reject combinations that cannot work, saying what would.
    fn validate(&self) -> Result<(), clap::Error> {
        let discovered = self.etcd.is_some() || self.registry.is_some();
        match self.command {
            Command::Frontend
                if !discovered && self.worker_at.is_empty() && self.engine_at.is_empty() =>
            {
                Err(error_of(
                    "frontend",
                    ErrorKind::MissingRequiredArgument,
                    "a frontend finds its workers through --etcd URL, --registry DIR or --worker-at ADDR, or routes to engine servers given with --engine-at",
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
                "the planner counts the workers registered in --etcd URL or --registry DIR and reads their load from --nats URL",
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
                    "the SLA policies plan from what one worker achieves: give --profile FILE (dynamo-replay profile --out FILE writes one)",
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
mod tests {
    use super::*;

    fn options(args: &str) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("dynamo-serve").chain(args.split_whitespace()))
    }

    fn refused(args: &str) -> clap::Error {
        options(args).expect_err("refused")
    }

    #[test]
    fn the_single_process_job_needs_no_flags() {
        let serve = options("").expect("valid");
        assert!(matches!(serve.command, Command::Serve));
        assert_eq!(serve.port, Some(8000));
        assert_eq!(serve.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((serve.workers, serve.block_size), (2, 16));
        assert_eq!(
            (serve.engine, serve.router, serve.sampling_defaults),
            (EngineKind::Candle, RouterKind::Kv, SamplingSource::Model)
        );
        assert_eq!((serve.name.as_str(), serve.model), ("smollm2", None));
        assert_eq!((serve.default_max_tokens, serve.max_in_flight), (256, 4096));
        let openapi = options("openapi out.json").expect("valid");
        assert!(
            matches!(openapi.command, Command::OpenApi(Some(path)) if path.ends_with("out.json"))
        );
        let serve =
            options("--engine echo --router round-robin --workers 3 --sampling-defaults none")
                .expect("valid");
        assert_eq!(
            (serve.workers, serve.sampling_defaults),
            (3, SamplingSource::Off)
        );
    }

    #[test]
    fn each_command_takes_its_own_flags() {
        let worker = options("worker --engine mocker --etcd http://e:2379 --id 3").expect("valid");
        assert!(matches!(worker.command, Command::Worker));
        assert_eq!((worker.id, worker.port), (Some(3), None));
        assert_eq!((worker.engine, worker.lease_ttl), (EngineKind::Mocker, 5));

        let error = refused("worker --workers 2");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        let text = error.to_string();
        assert!(text.contains("'--workers'"), "{text}");
        assert!(text.contains("Usage: dynamo-serve worker"), "{text}");
        assert!(
            text.contains("--workers is a flag of `dynamo-serve` (the single process)"),
            "{text}"
        );

        let error = refused("frontend --engine mocker --registry r");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        assert!(
            error.to_string().contains("dynamo-serve frontend"),
            "{error}"
        );
        let error = refused("--etcd http://e:2379");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        assert!(
            error
                .to_string()
                .contains("--etcd is a flag of `dynamo-serve worker` and `dynamo-serve frontend`"),
            "{error}"
        );
        let error = refused("--bogus 1");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        assert!(!error.to_string().contains("is a flag of"), "{error}");
        // The single process's flags go before no command.
        assert_eq!(
            refused("--workers 3 worker").kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn every_error_names_its_command() {
        let error = refused("worker --engine bogus");
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let text = error.to_string();
        assert!(text.contains("candle, mocker, echo"), "{text}");
        assert!(text.contains("Usage: dynamo-serve worker"), "{text}");
        let text = refused("--port x").to_string();
        assert!(text.contains("Usage: dynamo-serve [OPTIONS]"), "{text}");
        let text = refused("frontend --registry r").to_string();
        assert!(text.contains("Usage: dynamo-serve frontend"), "{text}");
    }

    #[test]
    fn candle_workers_take_host_and_disk_tiers() {
        let serve = options("").expect("valid");
        assert_eq!((serve.host_cache_blocks, serve.disk_cache), (0, None));
        let serve = options("--host-cache-blocks 64 --disk-cache /tmp/kv").expect("valid");
        assert_eq!(serve.host_cache_blocks, 64);
        let disk = |dir: &str, blocks, repeats_only| DiskTier {
            dir: PathBuf::from(dir),
            blocks,
            repeats_only,
        };
        assert_eq!(serve.disk_cache, Some(disk("/tmp/kv", 1024, false)));
        let worker = options(
            "worker --etcd http://e:2379 --disk-cache d --disk-cache-blocks 8 \
             --disk-cache-admission seen-twice",
        )
        .expect("valid");
        assert_eq!(worker.disk_cache, Some(disk("d", 8, true)));
        let error = refused("--disk-cache-admission seen-twice");
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        let error = refused("--disk-cache-blocks 8");
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        let error = refused("--disk-cache d --disk-cache-blocks 0");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn disaggregated_serving_takes_pools_roles_and_a_placement() {
        let serve = options("--prefill-workers 1 --decode-workers 2").expect("valid");
        assert_eq!(
            (serve.prefill_workers, serve.decode_workers, serve.workers),
            (1, 2, 3)
        );
        assert_eq!(serve.placement, PlacementKind::AlwaysRemote);
        let serve = options("--prefill-workers 2 --placement expected-ttft").expect("valid");
        assert_eq!(
            (serve.decode_workers, serve.placement),
            (1, PlacementKind::ExpectedTtft)
        );
        let frontend = options("frontend --registry r --router approx-kv --placement flexible")
            .expect("valid");
        assert_eq!(frontend.placement, PlacementKind::Flexible);
        let serve = options("--prefill-workers 1 --placement router-cost").expect("valid");
        assert_eq!(serve.placement, PlacementKind::RouterCost);
        assert_eq!(
            refused("--prefill-workers 1 --workers 2").kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            refused("--decode-workers 2").kind(),
            ErrorKind::MissingRequiredArgument
        );
        let worker = options("worker --registry r --role prefill --kv-port 7100").expect("valid");
        assert_eq!(
            (worker.role, worker.kv_port),
            (RoleKind::Prefill, Some(7100))
        );
        assert_eq!(options("").expect("valid").prefill_workers, 0);
        let error = refused("frontend --registry r --router round-robin --role decode");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    }

    #[test]
    fn numbers_are_checked() {
        for args in [
            "--workers 0",
            "--kv-blocks 0",
            "--speedup 0",
            "--speedup inf",
            "worker --lease-ttl 0",
            "--port 70000",
            "--host localhost",
        ] {
            assert_eq!(refused(args).kind(), ErrorKind::ValueValidation, "{args}");
        }
        assert!(
            refused("--workers 0")
                .to_string()
                .contains("must be at least 1")
        );
    }

    #[test]
    fn a_frontend_needs_discovery_and_kv_routing_needs_nats() {
        let error = refused("frontend --nats nats://n:4222");
        assert!(
            error
                .to_string()
                .contains("--etcd URL, --registry DIR or --worker-at"),
            "{error}"
        );
        let error = refused("frontend --registry /tmp/r");
        assert!(error.to_string().contains("--router kv needs"), "{error}");
        let error = refused("frontend --registry /tmp/r --etcd http://e:2379 --nats n");
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let error = refused("frontend --worker-at 127.0.0.1:9000 --etcd http://e:2379 --nats n");
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let error = refused("worker --registry /tmp/r --etcd http://e:2379");
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
        let error = refused("--engine echo");
        assert!(
            error
                .to_string()
                .contains("echo workers publish no KV events"),
            "{error}"
        );

        let frontend = options(
            "frontend --worker-at 7=127.0.0.1:9000,127.0.0.1:9001 --worker-at 127.0.0.1:9002 \
             --router round-robin --sampling-defaults none",
        )
        .expect("valid");
        assert_eq!(frontend.port, Some(8000));
        assert_eq!(frontend.sampling_defaults, SamplingSource::Off);
        let address = |text: &str| text.parse::<SocketAddr>().expect("an address");
        assert_eq!(
            frontend.worker_at,
            [
                (7, address("127.0.0.1:9000")),
                (2, address("127.0.0.1:9001")),
                (3, address("127.0.0.1:9002")),
            ]
        );
        assert_eq!(
            refused("frontend --worker-at 127.0.0.1 --router round-robin").kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn the_gateway_flags_set_keys_metrics_and_the_body_limit() {
        let serve = options("").expect("valid");
        assert_eq!(serve.migration_limit, 3);
        let frontend =
            options("frontend --registry r --router approx-kv --migration-limit 0").expect("valid");
        assert_eq!(frontend.migration_limit, 0);
        assert_eq!(serve.stall_timeout, 120);
        assert_eq!(serve.request_timeout, 0);
        let unwatched = options("frontend --registry r --router approx-kv --stall-timeout 0");
        assert_eq!(unwatched.expect("valid").stall_timeout, 0);
        assert_eq!(serve.drain_timeout, 30);
        let worker = options("worker --registry r --drain-timeout 5").expect("valid");
        let frontend = options("frontend --registry r --router approx-kv --drain-timeout 7");
        assert_eq!(worker.drain_timeout, 5);
        assert_eq!(frontend.expect("valid").drain_timeout, 7);
        assert_eq!(
            (serve.api_key_file, serve.open_metrics, serve.body_limit),
            (None, false, 16 << 20)
        );
        for line in [
            "--api-key-file keys.txt --open-metrics --body-limit 1024",
            "frontend --registry r --router approx-kv --api-key-file keys.txt --open-metrics \
             --body-limit 1024",
        ] {
            let options = options(line).expect("valid");
            assert!(
                options
                    .api_key_file
                    .is_some_and(|file| file.ends_with("keys.txt"))
            );
            assert_eq!((options.open_metrics, options.body_limit), (true, 1024));
        }
        let error = refused("worker --api-key-file keys.txt");
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    }

    #[test]
    fn the_planner_passes_the_flags_after_a_double_dash_to_its_workers() {
        let planner = options(
            "planner --registry r --nats nats://n --interval 2 --max-workers 3 \
                               -- --engine mocker --speedup 2",
        )
        .expect("valid");
        let Command::Planner(settings) = planner.command else {
            panic!("not the planner: {:?}", planner.command);
        };
        assert_eq!(
            (
                settings.interval_s,
                settings.min_workers,
                settings.max_workers
            ),
            (2.0, 1, 3)
        );
        assert_eq!(
            settings.worker_flags,
            ["--engine", "mocker", "--speedup", "2"]
        );
        assert!(!settings.disaggregated);
        let missing = refused("planner --registry r");
        assert_eq!(missing.kind(), ErrorKind::MissingRequiredArgument);
        let unregistered = refused("planner --nats n");
        assert_eq!(unregistered.kind(), ErrorKind::MissingRequiredArgument);
        let etcd = options("planner --etcd http://e:2379 --nats n --disaggregated").expect("valid");
        let Command::Planner(settings) = etcd.command else {
            panic!("not the planner: {:?}", etcd.command);
        };
        assert!(settings.disaggregated);
        let upside_down = refused("planner --registry r --nats n --min-workers 3 --max-workers 2");
        assert_eq!(upside_down.kind(), ErrorKind::ArgumentConflict);
        let no_profile = refused("planner --registry r --nats n --policy sla");
        assert_eq!(no_profile.kind(), ErrorKind::MissingRequiredArgument);
        let sla =
            options("planner --registry r --nats n --policy sla --profile p.json --ttft-ms 300")
                .expect("valid");
        let Command::Planner(settings) = sla.command else {
            panic!("not the planner: {:?}", sla.command);
        };
        assert_eq!(
            (settings.policy.as_str(), settings.targets.ttft_ms),
            ("sla", 300.0)
        );
    }
}
