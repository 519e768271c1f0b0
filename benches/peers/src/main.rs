//! Side-by-side benchmark of `dynamo-router`'s prefix index against published Rust prefix
//! indexers, on the same KV event stream. See README.md.
//!
//! ```text
//! cargo run --release -- [--trace PATH] [--runs N] [--workers 8,64,256] [--scale N]
//!     [--only NAME[,NAME...]] [--warm-queries]
//! ```
//!
//! `--scale N` replays N copies of the trace, their hash ids in disjoint ranges and their
//! requests interleaved, as one longer trace (see [`stream::scaled`]). `--only diag` (with other
//! names, e.g. `--only ours,diag`) adds the diagnostic stand-ins of [`indexers::diag`], which
//! split a lookup's time; they are never measured otherwise.

mod alloc;
mod bench;
mod indexers;
mod report;
mod stream;

use std::path::PathBuf;

use bench::{Indexer, Row, measure};
use indexers::{
    diag::{Diag, FirstHash, TimerOnly},
    dynamo_crtc::DynamoCrtc,
    dynamo_positional::DynamoPositional,
    dynamo_radix::DynamoRadix,
    kv_index_chain::KvIndexChain,
    ours::Ours,
};
use stream::Stream;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The Mooncake FAST'25 trace, from the project's shared folder.
const DEFAULT_TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/traces/mooncake-fast25/synthetic_trace.jsonl"
);

type Measurement = fn(&Stream, usize, bool) -> Row;

struct Args {
    trace: PathBuf,
    runs: usize,
    workers: Vec<u64>,
    scale: u64,
    /// Measure only the indexers whose name contains one of these (comma-separated).
    only: Option<String>,
    /// Read each query's hashes just before its lookup is timed.
    warm_queries: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        trace: PathBuf::from(DEFAULT_TRACE),
        runs: 5,
        workers: vec![8, 64, 256],
        scale: 1,
        only: None,
        warm_queries: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--trace" => args.trace = PathBuf::from(value()?),
            "--runs" => {
                args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
                if args.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--workers" => {
                args.workers = value()?
                    .split(',')
                    .map(|w| w.trim().parse().map_err(|e| format!("--workers: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--only" => args.only = Some(value()?),
            "--warm-queries" => args.warm_queries = true,
            "--scale" => {
                args.scale = value()?.parse().map_err(|e| format!("--scale: {e}"))?;
                if args.scale == 0 {
                    return Err("--scale must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: dynamo-peers-bench [--trace PATH] [--runs N] [--workers 8,64,256] [--scale N] [--only NAME[,NAME...]] [--warm-queries]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let trace = stream::load_trace(&args.trace).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let requests = trace.len();
    let trace = stream::scaled(trace, args.scale);
    eprintln!(
        "trace: {} ({requests} requests), scale {} ({} requests), {} runs per timing{}",
        args.trace.display(),
        args.scale,
        trace.len(),
        args.runs,
        if args.warm_queries {
            ", queries read before their lookups are timed"
        } else {
            ""
        }
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut streams = Vec::new();
    for &workers in &args.workers {
        let stream = Stream::new(&trace, workers);
        eprintln!(
            "W={workers}: {} events, {} blocks, {} resident (worker, block) pairs and {} resident \
             distinct blocks at the end",
            stream.events, stream.blocks, stream.resident_pairs, stream.resident_blocks
        );
        assert_eq!(
            indexers::ours::resident_pairs(&stream),
            stream.resident_pairs as u64,
            "our index and the reference model disagree on what is resident"
        );
        let measurements: [(&str, Measurement); 5] = [
            (Ours::NAME, measure::<Ours>),
            (DynamoRadix::NAME, measure::<DynamoRadix>),
            (DynamoPositional::NAME, measure::<DynamoPositional>),
            (DynamoCrtc::NAME, measure::<DynamoCrtc>),
            (KvIndexChain::NAME, measure::<KvIndexChain>),
        ];
        // Diagnostic stand-ins, only when `--only` names them ("diag").
        let diagnostics: [(&str, Measurement); 2] = [
            (Diag::<TimerOnly>::NAME, measure::<Diag<TimerOnly>>),
            (Diag::<FirstHash>::NAME, measure::<Diag<FirstHash>>),
        ];
        let diagnose = args.only.as_ref().is_some_and(|only| only.contains("diag"));
        let measurements = measurements
            .into_iter()
            .chain(diagnostics.into_iter().filter(|_| diagnose));
        let chosen = measurements.filter(|(name, _)| {
            args.only
                .as_ref()
                .is_none_or(|only| only.split(',').any(|part| name.contains(part.trim())))
        });
        for (_, measurement) in chosen {
            let row = measurement(&stream, args.runs, args.warm_queries);
            eprintln!("  measured {}", row.name);
            rows.push(row);
        }
        streams.push(report::Summary::of(&stream));
    }
    report::print(&rows, &streams, args.scale, trace.len());
}
