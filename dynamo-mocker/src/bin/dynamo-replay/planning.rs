//! `--planner`, `--fixed-sweep` and `profile`: the planner's side of the command.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use dynamo_mocker::{PlannerReplayConfig, ProfileSweep, ReplayConfig, profile_engine};
use dynamo_planner::perf::PerfProfile;
use dynamo_planner::policy::{
    DynamoSla, DynamoSlaConfig, LoadConfig, LoadPolicy, Policy, SlaConfig, SlaPolicy, SlaTargets,
};
use dynamo_planner::predict::PredictorKind;
use dynamo_planner::{Bounds, Planner, PlannerConfig, Replicas};

use crate::cli::{Cli, at_least_one, not_negative, positive, write_name};

/// The planner's flags.
#[derive(Debug, clap::Args)]
pub(crate) struct PlannerArgs {
    /// Let a planner size the pool during the replay, starting from --workers (or from
    /// --prefill-workers and --decode-workers)
    #[arg(long = "planner", value_name = "POLICY", default_value = "none")]
    pub(crate) policy: PlannerName,

    /// SLA target on the time to first token, for the attainment and the SLA policies
    #[arg(long, value_name = "MS", default_value_t = 500.0, value_parser = positive)]
    pub(crate) ttft_ms: f64,

    /// SLA target on the mean time between output tokens
    #[arg(long, value_name = "MS", default_value_t = 50.0, value_parser = positive)]
    pub(crate) itl_ms: f64,

    /// Seconds of virtual time between planning steps
    #[arg(long, value_name = "S", default_value_t = 60.0, value_parser = positive)]
    pub(crate) planner_interval_s: f64,

    /// Fewest workers the planner keeps (and the first size of --fixed-sweep)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) min_workers: usize,

    /// Most workers the planner asks for (and the last size of --fixed-sweep)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = at_least_one)]
    pub(crate) max_workers: usize,

    /// Most GPUs the planner's pools hold together (and the largest deployment of
    /// --fixed-sweep), each worker counting its --worker-gpus (or --prefill-gpus,
    /// --decode-gpus) [default: --max-workers workers of the role with the most GPUs]
    #[arg(long, value_name = "GPUS", value_parser = at_least_one)]
    pub(crate) budget: Option<usize>,

    /// Seconds from asking for a worker to routing to it (model load)
    #[arg(long, value_name = "S", default_value_t = 30.0, value_parser = not_negative)]
    pub(crate) startup_s: f64,

    /// The load predictor: constant, moving_average (moving_average:N averages N intervals),
    /// kalman, or holt_winters (holt_winters:N for a season of N intervals)
    #[arg(long, value_name = "NAME", default_value = "constant", value_parser = predictor)]
    pub(crate) predictor: PredictorKind,

    /// The planner's performance profile (from `dynamo-replay profile`); by default the
    /// replay's engine is profiled first
    #[arg(long, value_name = "FILE")]
    pub(crate) profile: Option<PathBuf>,

    /// sla policy: the share of each worker's profiled capacity the plan may use (default:
    /// the policy's; overrides --sla-config's)
    #[arg(long, value_name = "X", value_parser = positive)]
    pub(crate) sla_utilisation: Option<f64>,

    /// sla policy: non-default settings as JSON, for example '{"calm_s": 45}' (fields of
    /// dynamo_planner::policy::SlaConfig; the targets come from --ttft-ms and --itl-ms)
    #[arg(long, value_name = "JSON")]
    pub(crate) sla_config: Option<String>,

    /// Also replay fixed pools (first router, and first placement) and print the attainment /
    /// worker-hours frontier beside the planner's point: --min-workers to --max-workers
    /// workers, or with --prefill-workers and --decode-workers every P+D split with each pool
    /// at least --min-workers and at most --max-workers workers in all
    #[arg(long)]
    pub(crate) fixed_sweep: bool,
}

/// A planning policy `--planner` can name (`dynamo_planner::policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlannerName {
    /// No planner: --workers workers throughout
    None,
    /// Ours: throughput planning from the profile, corrected by what is observed
    Sla,
    /// NVIDIA Dynamo's throughput-based SLA planner
    Dynamo,
    /// Queues and KV usage, with hysteresis
    Load,
}

impl fmt::Display for PlannerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

fn predictor(value: &str) -> Result<PredictorKind, String> {
    value
        .parse()
        .map_err(|e: dynamo_planner::Error| e.to_string())
}

/// The performance profile the SLA policies plan from: `--profile`, or a profile of the
/// replay's engine measured now.
pub(crate) fn profile(cli: &Cli, config: &ReplayConfig) -> Result<PerfProfile, String> {
    match &cli.planner.profile {
        Some(path) => PerfProfile::from_json_file(path).map_err(|e| e.to_string()),
        None => profile_engine(config.engine, &config.timing, &ProfileSweep::default())
            .map_err(|e| e.to_string()),
    }
}

/// `dynamo-replay profile --out FILE`.
pub(crate) fn write_profile(cli: &Cli, out: &Path) -> Result<(), String> {
    let config = cli.config();
    let profile = profile_engine(config.engine, &config.timing, &ProfileSweep::default())
        .map_err(|e| e.to_string())?;
    std::fs::write(out, profile.to_json()).map_err(|e| format!("{}: {e}", out.display()))?;
    say!(
        "wrote {} prefill and {} decode points to {}",
        profile.prefill().len(),
        profile.decode().len(),
        out.display()
    );
    Ok(())
}

/// The planner's bounds, which the fixed pools of `--fixed-sweep` keep too: `--min-workers`
/// to `--max-workers` workers a pool, `--budget` GPUs in all (by default `--max-workers`
/// workers of the role whose workers hold the most of them), each worker holding its role's
/// GPUs.
pub(crate) fn bounds(cli: &Cli) -> Bounds {
    let args = &cli.planner;
    let gpus = cli.worker_gpus();
    let most_gpus = gpus.aggregated.max(gpus.prefill).max(gpus.decode);
    Bounds {
        min_per_pool: args.min_workers,
        max_per_pool: args.max_workers,
        budget: args
            .budget
            .unwrap_or(args.max_workers.saturating_mul(most_gpus)),
        gpus,
    }
}

/// The pools a replay starts with: its aggregated workers, or its prefill and decode pools.
fn starting_pools(config: &ReplayConfig) -> Replicas {
    match config.disagg {
        None => Replicas::Aggregated(config.workers),
        Some(pools) => Replicas::Disaggregated {
            prefill: pools.prefill_workers,
            decode: pools.decode_workers,
        },
    }
}

/// The planner's [`bounds`], checked for the replay's shape (aggregated, or prefill and
/// decode pools).
///
/// # Errors
///
/// When the bounds contradict themselves (a minimum above the maximum, say) or the budget
/// cannot pay for the least pools.
pub(crate) fn checked_bounds(cli: &Cli, config: &ReplayConfig) -> Result<Bounds, String> {
    let bounds = bounds(cli);
    bounds
        .check_for(starting_pools(config))
        .map_err(|e| e.to_string())?;
    Ok(bounds)
}

/// Starts a planner replay's pools within the planner's [`bounds`], as the planner would cut
/// them.
///
/// # Errors
///
/// As [`checked_bounds`].
pub(crate) fn start_within_bounds(cli: &Cli, config: &mut ReplayConfig) -> Result<(), String> {
    let bounds = checked_bounds(cli, config)?;
    // `Bounds::apply` keeps the shape it is given.
    match (bounds.apply(starting_pools(config)), &mut config.disagg) {
        (Replicas::Aggregated(workers), None) => config.workers = workers,
        (Replicas::Disaggregated { prefill, decode }, Some(pools)) => {
            (pools.prefill_workers, pools.decode_workers) = (prefill, decode);
        }
        _ => {}
    }
    Ok(())
}

/// A fresh planner as the flags say, and how the replay plays its decisions out; `None`
/// with `--planner none`.
pub(crate) fn planner(
    cli: &Cli,
    profile: Option<&PerfProfile>,
) -> Result<Option<(Planner, PlannerReplayConfig)>, String> {
    let args = &cli.planner;
    let targets = SlaTargets {
        ttft_ms: args.ttft_ms,
        itl_ms: args.itl_ms,
    };
    let needs_profile = || {
        profile
            .cloned()
            .ok_or("this policy needs a profile".to_string())
    };
    let policy: Box<dyn Policy> = match args.policy {
        PlannerName::None => return Ok(None),
        PlannerName::Sla => {
            let mut config: SlaConfig = match &args.sla_config {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| format!("--sla-config is not the sla policy's settings: {e}"))?,
                None => SlaConfig::default(),
            };
            config.targets = targets;
            if let Some(utilisation) = args.sla_utilisation {
                config.utilisation = utilisation;
            }
            Box::new(SlaPolicy::new(needs_profile()?, config))
        }
        PlannerName::Dynamo => Box::new(DynamoSla::new(
            needs_profile()?,
            DynamoSlaConfig { targets },
        )),
        PlannerName::Load => Box::new(LoadPolicy::new(LoadConfig::default())),
    };
    let config = PlannerConfig {
        interval_s: args.planner_interval_s,
        bounds: bounds(cli),
        advisory: false,
    };
    let predictor = args.predictor;
    let planner =
        Planner::new(config, policy, move || predictor.build()).map_err(|e| e.to_string())?;
    let replay = PlannerReplayConfig {
        startup_ms: args.startup_s * 1000.0,
    };
    Ok(Some((planner, replay)))
}
