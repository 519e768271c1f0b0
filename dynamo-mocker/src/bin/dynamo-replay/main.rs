//! Replay a request trace through simulated workers and compare routing policies.
//!
//! ```text
//! dynamo-replay --trace FILE [--workers 8] [--num-gpu-blocks 16384] [--block-size 64]
//!               [--trace-block-size 512] [--router kv,ttft,round-robin,...] [--json]
//!               [--speedup 1] [--event-lag-ms 0] [--max-in-flight N] [--seed 0]
//! ```

mod plot;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use dynamo_core::BlockSize;
use dynamo_mocker::{
    CacheKnowledge, InterpolatedTiming, Replay, ReplayConfig, RequestRecord, Summary, TimingModel,
    load_mooncake,
};
use dynamo_router::{
    ApproxConfig, ApproxIndex, ExpectedTtft, ExpectedTtftConfig, KvCost, KvCostConfig, LeastLoaded,
    PowerOfTwoChoices, Random, RoundRobin, Router, SharedIndex,
};

const ROUTERS: &str = "round-robin, random, p2c, least-loaded, kv, approx-kv, ttft, approx-ttft";

struct Options {
    trace: String,
    config: ReplayConfig,
    routers: Vec<String>,
    json: bool,
    seed: u64,
    requests_out: Option<PathBuf>,
    plot: Option<PathBuf>,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        trace: String::new(),
        config: ReplayConfig::default(),
        routers: Vec::new(),
        json: false,
        seed: 0,
        requests_out: None,
        plot: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--json" {
            options.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{}", include_str!("usage.txt"));
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, got {value:?}"))
        };
        let real = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{flag} takes a number, got {value:?}"))
        };
        match flag.as_str() {
            "--trace" => options.trace = value.clone(),
            "--workers" => options.config.workers = number()? as usize,
            "--num-gpu-blocks" => options.config.engine.num_gpu_blocks = number()?,
            "--block-size" => {
                options.config.engine.block_size =
                    BlockSize::new(number()? as u32).map_err(|e| e.to_string())?
            }
            "--trace-block-size" => options.config.trace_block_size = number()?,
            "--max-num-batched-tokens" => options.config.engine.max_num_batched_tokens = number()?,
            "--max-num-seqs" => options.config.engine.max_num_seqs = number()? as usize,
            "--speedup" => options.config.arrival_speedup = real()?,
            "--event-lag-ms" => options.config.event_lag_ms = real()?,
            "--max-in-flight" => options.config.max_in_flight = Some(number()? as usize),
            "--seed" => options.seed = number()?,
            "--requests-out" => options.requests_out = Some(PathBuf::from(&value)),
            "--timing-table" => options.config.timing = timing_table(&value)?,
            "--plot" => options.plot = Some(PathBuf::from(&value)),
            "--router" => options
                .routers
                .extend(value.split(',').map(|r| r.trim().to_owned())),
            other => return Err(format!("unknown flag {other}; see --help")),
        }
    }
    if options.trace.is_empty() {
        return Err("--trace FILE is required; see --help".into());
    }
    if options.config.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    if options.routers.is_empty() {
        options.routers = vec!["round-robin".into(), "kv".into(), "ttft".into()];
    }
    Ok(options)
}

/// A profiling table: `{"prefill": [[tokens, ms], ...], "decode": [[kv_usage, ms], ...]}`.
fn timing_table(path: &str) -> Result<TimingModel, String> {
    #[derive(serde::Deserialize)]
    struct Table {
        prefill: Vec<(f64, f64)>,
        decode: Vec<(f64, f64)>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let table: Table = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let model =
        InterpolatedTiming::new(table.prefill, table.decode).map_err(|e| format!("{path}: {e}"))?;
    Ok(TimingModel::Interpolated(model))
}

/// The policy and the cache knowledge a router name stands for.
fn router(name: &str, options: &Options) -> Result<(Box<dyn Router>, CacheKnowledge), String> {
    let block_size = options.config.engine.block_size;
    let seed = Some(options.seed);
    let events = || CacheKnowledge::Events(SharedIndex::new(block_size));
    let blind = || CacheKnowledge::Nothing;
    let approx = || {
        let config = ApproxConfig {
            capacity_blocks: Some(options.config.engine.num_gpu_blocks as usize),
            ..ApproxConfig::default()
        };
        CacheKnowledge::Other(Arc::new(ApproxIndex::new(block_size, config)))
    };
    let kv = || {
        Box::new(KvCost::new(KvCostConfig {
            seed,
            ..Default::default()
        })) as Box<dyn Router>
    };
    let ttft = || {
        Box::new(ExpectedTtft::new(ExpectedTtftConfig {
            seed,
            ..Default::default()
        })) as Box<dyn Router>
    };
    Ok(match name {
        "round-robin" => (Box::new(RoundRobin::new()), blind()),
        "random" => (Box::new(Random::new(seed)), blind()),
        "p2c" => (Box::new(PowerOfTwoChoices::new(seed)), blind()),
        "least-loaded" => (Box::new(LeastLoaded::new(seed)), blind()),
        "kv" => (kv(), events()),
        "approx-kv" => (kv(), approx()),
        "ttft" => (ttft(), events()),
        "approx-ttft" => (ttft(), approx()),
        other => return Err(format!("unknown router {other:?}; choose from {ROUTERS}")),
    })
}

fn print_table(summaries: &[Summary]) {
    println!(
        "{:<14} {:>9} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
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
        println!(
            "{:<14} {:>9} {:>8.3} {:>11.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9.1} {:>10.0} {:>9.0}",
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

/// A progress bar on standard error, when it is a terminal.
fn progress(name: &str) -> impl FnMut(usize, usize) + '_ {
    let show = std::io::stderr().is_terminal();
    move |done, total| {
        if show {
            let filled = done * 40 / total.max(1);
            eprint!("\r{name:<14} [{:<40}] {done}/{total}", "#".repeat(filled));
            if done == total {
                eprintln!();
            }
        }
    }
}

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

fn write_plots(dir: &PathBuf, runs: &[(String, Vec<RequestRecord>)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (file, svg) in [
        ("ttft_cdf.svg", plot::ttft_cdf(runs)),
        ("cache_reuse.svg", plot::reuse_over_time(runs)),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() {
    let result = (|| -> Result<(), String> {
        let options = parse()?;
        let trace = load_mooncake(&options.trace).map_err(|e| e.to_string())?;
        let mut summaries = Vec::new();
        let mut runs = Vec::new();
        for name in &options.routers {
            let (policy, knowledge) = router(name, &options)?;
            let outcome = Replay::new(&trace, &options.config)
                .label(name.as_str())
                .policy(policy)
                .knowledge(knowledge)
                .progress(progress(name))
                .run()
                .map_err(|e| e.to_string())?;
            if options.json {
                let line = serde_json::to_string(&outcome.summary).map_err(|e| e.to_string())?;
                println!("{line}");
            }
            summaries.push(outcome.summary);
            runs.push((name.clone(), outcome.records));
        }
        if !options.json {
            print_table(&summaries);
        }
        if let Some(path) = &options.requests_out {
            write_requests(path, &runs)?;
        }
        if let Some(dir) = &options.plot {
            write_plots(dir, &runs)?;
        }
        Ok(())
    })();
    if let Err(message) = result {
        eprintln!("dynamo-replay: {message}");
        std::process::exit(2);
    }
}
