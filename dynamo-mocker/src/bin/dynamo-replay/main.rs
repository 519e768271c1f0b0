//! Replay a request trace through simulated workers and compare routing policies.
//!
//! ```text
//! dynamo-replay --trace FILE [--workers 8] [--router round-robin,kv,ttft] [--json] ...
//! dynamo-replay --trace FILE --planner sla [--fixed-sweep] [--max-workers 8] ...
//! dynamo-replay --trace FILE --prefill-workers 2 --decode-workers 2 --planner sla --fixed-sweep
//! dynamo-replay [ENGINE FLAGS] profile --out profile.json
//! ```
//!
//! `dynamo-replay --help` lists every flag and its default.

/// `println!` for the replay's results: a reader that has gone (`dynamo-replay ... | head`) ends
/// the program quietly with status 0, as a closed pipe ends most command-line tools, instead of
/// `println!`'s panic; any other failure to write ends it with status 2 and the reason.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(error);
        }
    }};
}

mod cli;
mod planning;
mod plot;
mod sweep;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Parser;
use dynamo_mocker::{
    CacheKnowledge, Replay, ReplayConfig, RequestRecord, RouterReplicas, Sla, Summary,
    WorkloadConfig, generate, load_trace, write_mooncake,
};
use dynamo_router::disagg::{
    AlwaysRemote, ExpectedTtftPlacement, PlacementPolicy, RouterCostPlacement, StallFreePlacement,
    Threshold,
};
use dynamo_router::{
    ApproxConfig, ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, LeastLoaded,
    PowerOfTwoChoices, Random, RoundRobin, Router, SharedIndex,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Cli, Command, PatternName, PlacementName, RouterName};
use crate::planning::PlannerName;

/// The policy and the cache knowledge a router name stands for.
fn router(name: RouterName, config: &ReplayConfig, cli: &Cli) -> (Box<dyn Router>, CacheKnowledge) {
    let seed = cli.seed;
    let weights = (
        cli.ttft_compute_weight,
        cli.ttft_decode_ms_per_block,
        cli.ttft_stall_weight,
    );
    let block_size = config.engine.block_size;
    let seed = Some(seed);
    let events = || CacheKnowledge::Events(SharedIndex::new(block_size));
    let blind = || CacheKnowledge::Nothing;
    let approx = || {
        let config = ApproxConfig {
            capacity_blocks: Some(config.engine.num_gpu_blocks as usize),
            ..ApproxConfig::default()
        };
        CacheKnowledge::Approximate(config)
    };
    let kv = |prefill_scale| {
        Box::new(KvCost::new(KvCostConfig {
            seed,
            prefill_scale,
            ..Default::default()
        })) as Box<dyn Router>
    };
    let ttft = || {
        Box::new(ExpectedTtft::new(ExpectedTtftConfig {
            seed,
            compute_weight: weights.0,
            decode_ms_per_block: weights.1,
            stall_weight: weights.2,
            // The replay knows each worker's KV capacity; a deployment configures it.
            kv_capacity_blocks: Some(config.engine.num_gpu_blocks),
            memory_wait_ms: cli.ttft_memory_wait_ms,
            ..Default::default()
        })) as Box<dyn Router>
    };
    match name {
        RouterName::RoundRobin => (Box::new(RoundRobin::new()), blind()),
        RouterName::Random => (Box::new(Random::new(seed)), blind()),
        RouterName::P2c => (Box::new(PowerOfTwoChoices::new(seed)), blind()),
        RouterName::LeastLoaded => (Box::new(LeastLoaded::new(seed)), blind()),
        RouterName::Kv => (kv(1.0), events()),
        RouterName::ApproxKv => (kv(1.0), approx()),
        RouterName::KvLoad => (kv(0.0), events()),
        RouterName::Ttft => (ttft(), events()),
        RouterName::ApproxTtft => (ttft(), approx()),
    }
}

/// `dynamo-replay generate`: write a synthetic trace.
fn write_workload(
    pattern: PatternName,
    requests: usize,
    rate_per_s: Option<f64>,
    seed: u64,
    out: &std::path::Path,
) -> Result<(), String> {
    let config = WorkloadConfig {
        pattern: pattern.into(),
        requests,
        rate_per_s,
        seed,
    };
    let trace = generate(&config);
    let file =
        std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    write_mooncake(&trace, &mut writer)
        .and_then(|()| writer.flush())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))
}

/// The placement policy a name stands for; ours is told the replay's KV link.
fn placement(name: PlacementName, cli: &Cli) -> Box<dyn PlacementPolicy> {
    let transfer = cli.transfer();
    // The hand-over of one block, without the link's latency.
    let transfer_ms_per_block =
        transfer.time_ms(u64::from(cli.block_size.get()), cli.block_size) - transfer.latency_ms;
    let ttft = ExpectedTtftConfig {
        compute_weight: cli.ttft_compute_weight,
        decode_ms_per_block: cli.ttft_decode_ms_per_block,
        stall_weight: cli.ttft_stall_weight,
        ..ExpectedTtftConfig::default()
    };
    match name {
        PlacementName::AlwaysRemote => Box::new(AlwaysRemote),
        PlacementName::Threshold => Box::new(Threshold::default()),
        PlacementName::ExpectedTtft | PlacementName::Flexible => Box::new(ExpectedTtftPlacement {
            transfer_ms_per_block,
            transfer_latency_ms: transfer.latency_ms,
            stall_weight: cli.stall_weight,
            prefill_workers_decode: name == PlacementName::Flexible,
            ..ExpectedTtftPlacement::default()
        }),
        PlacementName::RouterCost => Box::new(RouterCostPlacement::new(ttft)),
        PlacementName::StallFree | PlacementName::StallFreePull => {
            let policy = StallFreePlacement::new(ttft)
                .with_transfer(transfer_ms_per_block, transfer.latency_ms);
            if name == PlacementName::StallFreePull {
                Box::new(policy.pulling_prefix())
            } else {
                Box::new(policy)
            }
        }
    }
}

/// A disaggregated replay's decode-pool routers (`--decode-router`, `--handoff-router`) and
/// placement.
fn disaggregated<'a>(
    replay: Replay<'a, Box<dyn Router>>,
    placement_name: PlacementName,
    config: &ReplayConfig,
    cli: &Cli,
) -> Replay<'a, Box<dyn Router>> {
    let (decode_policy, decode_knowledge) = router(cli.decode_router, config, cli);
    let (handoff_policy, _) = router(cli.handoff_router, config, cli);
    replay
        .decode_policy(decode_policy, decode_knowledge)
        .handoff_policy(handoff_policy)
        .placement(placement(placement_name, cli))
}

/// Where the time went in disaggregated replays: placements, and the phases of remote
/// requests (prefill = arrival to the end of the prefill; decode wait = the KV's arrival to
/// the first token).
fn print_phases(summaries: &[Summary]) {
    let w = label_width(summaries);
    say!(
        "{:<w$} {:>7} {:>6} {:>11} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "router/placement",
        "remote",
        "local",
        "prefill_p50",
        "prefill_p90",
        "xfer_avg",
        "dwait_p50",
        "dwait_p90",
        "ttft_r_p90",
        "ttft_l_p90",
        "tpot_r",
        "tpot_l"
    );
    for s in summaries {
        let Some(d) = &s.disagg else { continue };
        say!(
            "{:<w$} {:>7} {:>6} {:>11.1} {:>11.1} {:>10.2} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.2} {:>10.2}",
            s.router,
            d.remote_requests,
            d.local_requests,
            d.prefill.p50_ms,
            d.prefill.p90_ms,
            d.transfer.mean_ms,
            d.decode_wait.p50_ms,
            d.decode_wait.p90_ms,
            d.remote_ttft.p90_ms,
            d.local_ttft.p90_ms,
            d.remote_mean_tpot_ms,
            d.local_mean_tpot_ms
        );
    }
}

/// The width of the first column: the longest router label.
fn label_width(summaries: &[Summary]) -> usize {
    summaries
        .iter()
        .map(|s| s.router.len())
        .max()
        .unwrap_or(0)
        .max(14)
}

fn print_table(summaries: &[Summary]) {
    let w = label_width(summaries);
    say!(
        "{:<w$} {:>9} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "router",
        "completed",
        "reuse",
        "duration_s",
        "ttft_p50",
        "ttft_p90",
        "ttft_p99",
        "tpot_avg",
        "e2e_avg",
        "out_tok/s",
        "wall_ms"
    );
    for s in summaries {
        say!(
            "{:<w$} {:>9} {:>8.3} {:>11.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9.1} {:>10.0} {:>9.0}",
            s.router,
            s.completed_requests,
            s.prefix_cache_reused_ratio,
            s.duration_ms / 1000.0,
            s.median_ttft_ms,
            s.p90_ttft_ms,
            s.p99_ttft_ms,
            s.mean_tpot_ms,
            s.mean_e2e_latency_ms,
            s.output_throughput_tok_s,
            s.wall_time_ms
        );
    }
}

/// A progress bar for a replay of `total` requests, on standard error when it is a terminal;
/// nothing otherwise (CI logs).
fn progress(name: &str, total: usize) -> impl FnMut(usize, usize) + use<> {
    let mut bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
        .with_prefix(name.to_owned());
    // The template is checked by a test below; should it fail, indicatif's own bar shows.
    if let Ok(style) = ProgressStyle::with_template(BAR) {
        bar = bar.with_style(style.progress_chars("#>-"));
    }
    // Drawn from the first update on, once its style and prefix are set.
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    move |done, total| {
        if bar.length() != Some(total as u64) {
            bar.set_length(total as u64);
        }
        bar.set_position(done as u64);
        if done == total {
            bar.finish();
        }
    }
}

/// The progress bar: router, bar, requests finished, time elapsed.
const BAR: &str = "{prefix:<28} [{bar:40}] {pos}/{len} {elapsed}";

fn write_requests(path: &PathBuf, runs: &[(String, Vec<RequestRecord>)]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (router, records) in runs {
        for record in records {
            let mut line = serde_json::to_value(record).map_err(|e| e.to_string())?;
            line["router"] = serde_json::Value::from(router.as_str());
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn write_plots(
    dir: &PathBuf,
    runs: &[(String, Vec<RequestRecord>)],
    summaries: &[Summary],
    fixed: &[sweep::FixedRun],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut charts = vec![
        ("ttft_cdf.svg", plot::ttft_cdf(runs)),
        ("cache_reuse.svg", plot::reuse_over_time(runs)),
    ];
    if summaries.iter().any(|s| s.replicas.is_some()) {
        charts.push(("replicas.svg", plot::replicas(runs, summaries)));
    }
    if !fixed.is_empty() {
        charts.push(("frontier.svg", plot::frontier(fixed, summaries)));
    }
    for (file, svg) in charts {
        let path = dir.join(file);
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Where `say!` goes when standard output cannot be written.
fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("dynamo-replay: cannot write the results: {error}");
    std::process::exit(2);
}

fn main() {
    // Bad flags exit with status 2 and clap's message; so do failures of the replay itself.
    let cli = Cli::parse();
    if let Err(message) = run(&cli) {
        eprintln!("dynamo-replay: {message}");
        std::process::exit(2);
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    if let Some(Command::Profile { out }) = &cli.command {
        return planning::write_profile(cli, out);
    }
    if let Some(Command::Generate {
        pattern,
        requests,
        rate,
        seed,
        out,
    }) = &cli.command
    {
        return write_workload(*pattern, *requests, *rate, *seed, out);
    }
    let mut config = cli.config();
    let path = cli.trace.as_ref().ok_or("--trace is required")?;
    let trace = load_trace(path, cli.trace_block_size).map_err(|e| e.to_string())?;
    let sla = Sla {
        ttft_ms: cli.planner.ttft_ms,
        itl_ms: cli.planner.itl_ms,
    };
    let planned = cli.planner.policy != PlannerName::None;
    let profile = match cli.planner.policy {
        PlannerName::Sla | PlannerName::Dynamo => Some(planning::profile(cli, &config)?),
        PlannerName::None | PlannerName::Load => None,
    };
    if planned {
        planning::start_within_bounds(cli, &mut config)?;
    }
    let mut summaries = Vec::new();
    let mut runs = Vec::new();
    // A disaggregated replay runs each router with each placement.
    let placements: Vec<Option<PlacementName>> = match config.disagg {
        Some(_) => cli.placements.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let runs_of = cli.routers.iter().flat_map(|&name| {
        placements.iter().flat_map(move |&p| {
            cli.router_replicas
                .iter()
                .map(move |&replicas| (name, p, replicas))
        })
    });
    for (name, placement_name, replicas) in runs_of {
        let mut label = match placement_name {
            Some(p) => format!("{name}/{p}"),
            None => name.to_string(),
        };
        if cli.router_replicas != [1] {
            let alone = if cli.no_share { " alone" } else { "" };
            label = format!("{label} x{replicas}{alone}");
        }
        if planned {
            label = format!("{label}+{}", cli.planner.policy);
        }
        let (policy, knowledge) = router(name, &config, cli);
        let mut replay = Replay::new(&trace, &config)
            .label(label.as_str())
            .policy(policy)
            .knowledge(knowledge)
            .router_replicas(RouterReplicas {
                count: replicas,
                share: !cli.no_share,
                delay_ms: cli.share_delay_ms,
            })
            .sla(sla);
        if let Some((planner, planner_config)) = planning::planner(cli, profile.as_ref())? {
            replay = replay.planner(planner, planner_config);
        }
        if let Some(p) = placement_name {
            replay = disaggregated(replay, p, &config, cli);
        }
        let outcome = replay
            .progress(progress(&label, trace.len()))
            .run()
            .map_err(|e| e.to_string())?;
        if cli.json {
            let line = serde_json::to_string(&outcome.summary).map_err(|e| e.to_string())?;
            say!("{line}");
        }
        summaries.push(outcome.summary);
        runs.push((label, outcome.records));
    }
    if !cli.json {
        print_table(&summaries);
        if config.disagg.is_some() {
            say!();
            print_phases(&summaries);
        }
    }
    let mut fixed = Vec::new();
    if cli.planner.fixed_sweep {
        fixed = sweep::run(cli, &trace, &config, sla)?;
        if cli.json {
            for run in &fixed {
                say!("{}", run.json_line()?);
            }
        }
    }
    if !cli.json && (planned || !fixed.is_empty()) {
        say!();
        let planner_runs: Vec<Summary> = summaries
            .iter()
            .filter(|s| s.replicas.is_some())
            .cloned()
            .collect();
        sweep::print_frontier(&fixed, &planner_runs);
    }
    if let Some(path) = &cli.requests_out {
        write_requests(path, &runs)?;
    }
    if let Some(dir) = &cli.plot {
        write_plots(dir, &runs, &summaries, &fixed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_template_is_valid() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
    }
}
