//! Replay a request trace through simulated workers and compare routing policies.
//!
//! ```text
//! dynamo-replay --trace FILE [--workers 8] [--num-gpu-blocks 16384] [--block-size 64]
//!               [--trace-block-size 512] [--router kv,ttft,round-robin,...] [--json]
//!               [--speedup 1] [--event-lag-ms 0] [--max-in-flight N] [--seed 0]
//! ```

use std::sync::Arc;

use dynamo_core::BlockSize;
use dynamo_mocker::{CacheKnowledge, ReplayConfig, Summary, load_mooncake, replay};
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
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        trace: String::new(),
        config: ReplayConfig::default(),
        routers: Vec::new(),
        json: false,
        seed: 0,
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

fn main() {
    let result = (|| -> Result<(), String> {
        let options = parse()?;
        let trace = load_mooncake(&options.trace).map_err(|e| e.to_string())?;
        let mut summaries = Vec::new();
        for name in &options.routers {
            let (policy, knowledge) = router(name, &options)?;
            let summary = replay(&trace, &options.config, name, policy, knowledge)
                .map_err(|e| e.to_string())?
                .summary;
            if options.json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).map_err(|e| e.to_string())?
                );
            }
            summaries.push(summary);
        }
        if !options.json {
            print_table(&summaries);
        }
        Ok(())
    })();
    if let Err(message) = result {
        eprintln!("dynamo-replay: {message}");
        std::process::exit(2);
    }
}
