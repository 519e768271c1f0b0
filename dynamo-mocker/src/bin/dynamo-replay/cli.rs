//! The flags of `dynamo-replay`, parsed by clap.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use dynamo_core::BlockSize;
use dynamo_mocker::{
    DisaggConfig, DiskTierConfig, EngineConfig, HandedOverKv, HostTierConfig, InterpolatedTiming,
    ReplayConfig, SharingPattern, TimingModel, TransferConfig,
};
use dynamo_planner::WorkerGpus;
use dynamo_router::ExpectedTtftConfig;
use dynamo_router::disagg::ExpectedTtftPlacement;

/// Replay a request trace (Mooncake JSON lines, or an Azure CSV) through simulated vLLM-like
/// workers, routed by dynamo-router's policies, on a virtual clock; optionally with the
/// planner sizing the pool.
///
/// Prints one line per router: a table, or a JSON object with --json. A progress bar goes to
/// standard error when it is a terminal.
#[derive(Debug, Parser)]
// The defaults are read from `ReplayConfig::default()`, so the two cannot drift apart.
// A flag given twice keeps its last value (`--router` and `--placement` add up instead).
#[command(
    name = "dynamo-replay",
    args_override_self = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// The trace: Mooncake JSON lines (timestamp, input_length, output_length, hash_ids), or an
    /// Azure CSV (TIMESTAMP, ContextTokens, GeneratedTokens; a name ending in .csv), whose
    /// prompts get fresh hash_ids
    #[arg(long, value_name = "FILE", required = true)]
    pub(crate) trace: Option<PathBuf>,

    /// Simulated workers (aggregated; unused with --prefill-workers and --decode-workers)
    #[arg(long, value_name = "N", default_value_t = ReplayConfig::default().workers,
          value_parser = at_least_one)]
    pub(crate) workers: usize,

    /// Prefill workers of a disaggregated replay (with --decode-workers)
    #[arg(long, value_name = "P", requires = "decode_workers", value_parser = at_least_one)]
    pub(crate) prefill_workers: Option<usize>,

    /// Decode workers of a disaggregated replay (with --prefill-workers)
    #[arg(long, value_name = "D", requires = "prefill_workers", value_parser = at_least_one)]
    pub(crate) decode_workers: Option<usize>,

    /// GPUs one aggregated worker holds (its tensor-parallel size): what it costs in
    /// gpu_hours and against --budget. Its steps are timed as --timing-table (or the default
    /// model) says, whatever its GPUs
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one,
          conflicts_with = "prefill_workers")]
    pub(crate) worker_gpus: usize,

    /// GPUs one prefill worker holds (with --prefill-workers)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one,
          requires = "prefill_workers")]
    pub(crate) prefill_gpus: usize,

    /// GPUs one decode worker holds (with --decode-workers)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one,
          requires = "decode_workers")]
    pub(crate) decode_gpus: usize,

    /// Where prompts are computed in a disaggregated replay, comma-separated to compare;
    /// repeatable
    #[arg(long = "placement", value_name = "LIST", value_delimiter = ',',
          action = clap::ArgAction::Append, value_parser = PLACEMENT,
          default_value = "always-remote")]
    pub(crate) placements: Vec<PlacementName>,

    /// expected-ttft placement: how much a ms of stall of each decode running on the decode
    /// worker counts against a ms of the new request's TTFT (higher: fewer local prefills)
    #[arg(long, value_name = "W", value_parser = not_negative, allow_negative_numbers = true,
          default_value_t = ExpectedTtftPlacement::default().stall_weight)]
    pub(crate) stall_weight: f64,

    /// The decode pool's router for prompts computed there, in a disaggregated replay (the
    /// prefill pool uses --router)
    #[arg(long, value_name = "NAME", value_parser = ROUTER, default_value = "kv-load")]
    pub(crate) decode_router: RouterName,

    /// The decode pool's router for prompts a prefill worker computed, in a disaggregated
    /// replay
    #[arg(long, value_name = "NAME", value_parser = ROUTER, default_value = "kv-load")]
    pub(crate) handoff_router: RouterName,

    /// Bandwidth of the KV hand-over from prefill to decode worker, in GB/s (0: instant, as
    /// NVIDIA Dynamo's mocker by default)
    #[arg(long, value_name = "GB/S", value_parser = not_negative, allow_negative_numbers = true,
          default_value_t = TransferConfig::default().bandwidth_gb_per_s)]
    pub(crate) transfer_bandwidth: f64,

    /// Decode workers keep handed-over prompts in their prefix cache, where later local
    /// prefills find them (by default they free them, as NVIDIA Dynamo's mocker)
    #[arg(long)]
    pub(crate) keep_handed_over_kv: bool,

    /// Fixed cost of each KV hand-over, in ms
    #[arg(long, value_name = "MS", value_parser = not_negative, allow_negative_numbers = true,
          default_value_t = TransferConfig::default().latency_ms)]
    pub(crate) transfer_latency_ms: f64,

    /// KV blocks per worker
    #[arg(long, value_name = "B", default_value_t = ReplayConfig::default().engine.num_gpu_blocks)]
    pub(crate) num_gpu_blocks: u64,

    /// Tokens per KV block
    #[arg(long, value_name = "T", default_value_t = ReplayConfig::default().engine.block_size,
          value_parser = block_size)]
    pub(crate) block_size: BlockSize,

    /// Tokens per trace hash_id
    #[arg(long, value_name = "T", default_value_t = ReplayConfig::default().trace_block_size)]
    pub(crate) trace_block_size: u64,

    /// Token budget per engine step
    #[arg(long, value_name = "T",
          default_value_t = ReplayConfig::default().engine.max_num_batched_tokens)]
    pub(crate) max_num_batched_tokens: u64,

    /// Running sequences per worker
    #[arg(long, value_name = "N", default_value_t = ReplayConfig::default().engine.max_num_seqs)]
    pub(crate) max_num_seqs: usize,

    /// Host-memory (G2) KV blocks per worker, below the device cache (0: no host tier)
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub(crate) host_blocks: u64,

    /// KV bytes per token, which size the copies between device and host and the KV
    /// hand-over of a disaggregated replay
    #[arg(long, value_name = "BYTES",
          default_value_t = HostTierConfig::default().kv_bytes_per_token)]
    pub(crate) kv_bytes_per_token: u64,

    /// Bandwidth of copies between device and host, each way, in GB/s (0: instant)
    #[arg(long, value_name = "GB/S", default_value_t = HostTierConfig::default().h2d_gb_per_s,
          value_parser = not_negative)]
    pub(crate) host_bandwidth: f64,

    /// Local disk (G3) KV blocks per worker, below the host tier (0: none; needs --host-blocks)
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub(crate) disk_blocks: u64,

    /// Disk read and write bandwidth, each, in GB/s (0: instant)
    #[arg(long, value_name = "GB/S", default_value_t = DiskTierConfig::default().gb_per_s,
          value_parser = not_negative)]
    pub(crate) disk_bandwidth: f64,

    /// Routers to compare, comma-separated; repeatable
    #[arg(long = "router", value_name = "LIST", value_delimiter = ',',
          action = clap::ArgAction::Append, value_parser = ROUTER,
          default_value = "round-robin,kv,ttft")]
    pub(crate) routers: Vec<RouterName>,

    /// ttft and approx-ttft: the weight of the prefill time a request adds for the requests
    /// that queue behind it
    #[arg(long, value_name = "W", value_parser = not_negative,
          default_value_t = ExpectedTtftConfig::default().compute_weight)]
    pub(crate) ttft_compute_weight: f64,

    /// ttft and approx-ttft: the weight of the stall a request's prefill causes each request
    /// already active on the worker
    #[arg(long, value_name = "W", value_parser = not_negative,
          default_value_t = ExpectedTtftConfig::default().stall_weight)]
    pub(crate) ttft_stall_weight: f64,

    /// ttft and approx-ttft: the cost, in ms, of each KV block held on the worker
    #[arg(long, value_name = "MS", value_parser = not_negative,
          default_value_t = ExpectedTtftConfig::default().decode_ms_per_block)]
    pub(crate) ttft_decode_ms_per_block: f64,

    /// ttft and approx-ttft: how long, in ms, a request waits for memory on a worker whose
    /// KV cache is full (charged times the chance of finding it full)
    #[arg(long, value_name = "MS", value_parser = not_negative,
          default_value_t = ExpectedTtftConfig::default().memory_wait_ms)]
    pub(crate) ttft_memory_wait_ms: f64,

    /// Step times from a profiling table instead of the polynomial model:
    /// {"prefill": [[tokens, ms], ...], "decode": [[kv_usage, ms], ...]}
    #[arg(long, value_name = "FILE", value_parser = timing_table)]
    pub(crate) timing_table: Option<TimingModel>,

    /// Arrivals X times faster than the trace
    #[arg(long, value_name = "X", allow_negative_numbers = true,
          default_value_t = ReplayConfig::default().arrival_speedup, value_parser = positive)]
    pub(crate) speedup: f64,

    /// KV events reach the router this late
    #[arg(long, value_name = "MS", allow_negative_numbers = true,
          default_value_t = ReplayConfig::default().event_lag_ms)]
    pub(crate) event_lag_ms: f64,

    /// At most N requests in the system; later arrivals wait
    #[arg(long, value_name = "N")]
    pub(crate) max_in_flight: Option<usize>,

    /// Route with N router replicas (arrivals dealt round-robin); a list runs each count
    // `Set`, not a list's default `Append`: given twice, the last list replaces the first.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = at_least_one,
          action = clap::ArgAction::Set, default_value = "1")]
    pub(crate) router_replicas: Vec<usize>,

    /// Router replicas' messages reach the others this late
    #[arg(long, value_name = "MS", value_parser = not_negative, allow_negative_numbers = true,
          default_value_t = 0.0)]
    pub(crate) share_delay_ms: f64,

    /// Router replicas do not share their load and predictions
    #[arg(long)]
    pub(crate) no_share: bool,

    /// Seed of the random tie-breaks
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub(crate) seed: u64,

    /// One JSON object per router instead of a table
    #[arg(long)]
    pub(crate) json: bool,

    /// Per-request records as JSON lines (with a "router" field)
    #[arg(long, value_name = "FILE")]
    pub(crate) requests_out: Option<PathBuf>,

    /// Write ttft_cdf.svg and cache_reuse.svg into DIR (and replicas.svg with --planner,
    /// frontier.svg with --fixed-sweep)
    #[arg(long, value_name = "DIR")]
    pub(crate) plot: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) planner: crate::planning::PlannerArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Profile one simulated worker (the engine flags before `profile` set it up) and write
    /// the planner's performance profile as JSON
    Profile {
        /// Where to write the profile
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write a seeded synthetic trace (Mooncake JSON lines, trace blocks of 512 tokens) with
    /// a chosen sharing pattern
    Generate {
        /// How the prompts share prefixes
        #[arg(long, value_name = "NAME")]
        pattern: PatternName,
        /// Requests in the trace
        #[arg(long, value_name = "N", default_value_t = 4000, value_parser = at_least_one)]
        requests: usize,
        /// Mean requests per second (default: the pattern's own)
        #[arg(long, value_name = "R", value_parser = positive)]
        rate: Option<f64>,
        /// Seed: the same flags and seed write the same trace
        #[arg(long, value_name = "S", default_value_t = 0)]
        seed: u64,
        /// Where to write the trace
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// A sharing pattern `generate` can write (`dynamo_mocker::SharingPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PatternName {
    /// Many conversations of 1-6 short turns, each turn extending the previous one
    ManyShortChats,
    /// 16 long conversations side by side, growing to 100k tokens
    FewLongChats,
    /// One 8,192-token system prompt before every request
    HotPrefix,
    /// 200 documents with Zipf popularity, each request a document and a question
    Documents,
    /// No shared blocks at all
    NoSharing,
}

impl From<PatternName> for SharingPattern {
    fn from(name: PatternName) -> Self {
        match name {
            PatternName::ManyShortChats => SharingPattern::ManyShortChats,
            PatternName::FewLongChats => SharingPattern::FewLongChats,
            PatternName::HotPrefix => SharingPattern::HotPrefix,
            PatternName::Documents => SharingPattern::Documents,
            PatternName::NoSharing => SharingPattern::NoSharing,
        }
    }
}

impl Cli {
    /// The replay's settings.
    pub(crate) fn config(&self) -> ReplayConfig {
        let defaults = ReplayConfig::default();
        let disagg = match (self.prefill_workers, self.decode_workers) {
            (Some(prefill_workers), Some(decode_workers)) => Some(DisaggConfig {
                prefill_workers,
                decode_workers,
                transfer: self.transfer(),
                handed_over_kv: if self.keep_handed_over_kv {
                    HandedOverKv::Cached
                } else {
                    HandedOverKv::Discarded
                },
            }),
            _ => None,
        };
        ReplayConfig {
            workers: self.workers,
            disagg,
            engine: EngineConfig {
                num_gpu_blocks: self.num_gpu_blocks,
                block_size: self.block_size,
                max_num_batched_tokens: self.max_num_batched_tokens,
                max_num_seqs: self.max_num_seqs,
                host: (self.host_blocks > 0).then_some(HostTierConfig {
                    blocks: self.host_blocks,
                    kv_bytes_per_token: self.kv_bytes_per_token,
                    d2h_gb_per_s: self.host_bandwidth,
                    h2d_gb_per_s: self.host_bandwidth,
                    ..HostTierConfig::default()
                }),
                disk: (self.disk_blocks > 0).then_some(DiskTierConfig {
                    blocks: self.disk_blocks,
                    gb_per_s: self.disk_bandwidth,
                    ..DiskTierConfig::default()
                }),
            },
            timing: self.timing_table.clone().unwrap_or(defaults.timing),
            trace_block_size: self.trace_block_size,
            arrival_speedup: self.speedup,
            event_lag_ms: self.event_lag_ms,
            max_in_flight: self.max_in_flight,
            worker_gpus: self.worker_gpus(),
            ..defaults
        }
    }

    /// The GPUs of each role's workers.
    pub(crate) fn worker_gpus(&self) -> WorkerGpus {
        WorkerGpus {
            aggregated: self.worker_gpus,
            prefill: self.prefill_gpus,
            decode: self.decode_gpus,
        }
    }
}

impl Cli {
    /// The KV hand-over of a disaggregated replay.
    pub(crate) fn transfer(&self) -> TransferConfig {
        TransferConfig {
            bandwidth_gb_per_s: self.transfer_bandwidth,
            latency_ms: self.transfer_latency_ms,
            kv_bytes_per_token: self.kv_bytes_per_token,
        }
    }
}

/// A placement policy `--placement` can name (`dynamo_router::disagg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlacementName {
    /// Every prompt on a prefill worker (NVIDIA Dynamo's disaggregated serving)
    AlwaysRemote,
    /// NVIDIA Dynamo's conditional disaggregation: short, mostly cached or queued prompts stay
    Threshold,
    /// Ours: the lower expected time to first token, local prefill charged for its stalls
    ExpectedTtft,
    /// expected-ttft with a flexible prefill pool: an idle prefill worker serves whole requests
    Flexible,
    /// A flexible prefill pool placed by the ttft router's cost (its --ttft-* weights): each
    /// request goes whole to the candidate that router prefers, as over one aggregated pool
    RouterCost,
    /// Ours: a prompt stays on its decode worker only while that worker decodes nothing and
    /// the ttft router's cost prefers it; every other prompt is handed over (no decode stalls)
    StallFree,
    /// stall-free, and the worker that computes a prompt first pulls the longest prefix of it
    /// any worker caches (over the link), computing only the rest
    StallFreePull,
}

impl fmt::Display for PlacementName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

/// Write `value` as its flag value: the name given on the command line.
pub(crate) fn write_name(value: &impl ValueEnum, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let value = value.to_possible_value().ok_or(fmt::Error)?;
    f.write_str(value.get_name())
}

/// A routing policy `--router` can name, with the cache knowledge it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RouterName {
    /// Each worker in turn
    RoundRobin,
    /// A worker at random
    Random,
    /// The less loaded of two random workers
    P2c,
    /// The least loaded worker
    LeastLoaded,
    /// NVIDIA Dynamo's cost, fed by the workers' KV events
    Kv,
    /// NVIDIA Dynamo's cost, guessing the caches without events
    ApproxKv,
    /// NVIDIA Dynamo's decode-pool cost: active blocks only, no prefill term
    KvLoad,
    /// Ours: the expected time to first token, fed by KV events
    Ttft,
    /// Ours, guessing the caches without events
    ApproxTtft,
}

/// The name as given on the command line, which labels the router's results.
impl fmt::Display for RouterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

/// Names (of routers, of placements) with the spaces around them ignored, so that
/// `--router "kv, ttft"` works.
#[derive(Debug, Clone, Copy)]
struct Trimmed<T>(std::marker::PhantomData<T>);

const ROUTER: Trimmed<RouterName> = Trimmed(std::marker::PhantomData);
const PLACEMENT: Trimmed<PlacementName> = Trimmed(std::marker::PhantomData);

impl<T: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Trimmed<T> {
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let trimmed = value.to_str().map_or(value, |text| OsStr::new(text.trim()));
        EnumValueParser::<T>::new().parse_ref(command, arg, trimmed)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let names = T::value_variants().iter();
        Some(Box::new(names.filter_map(ValueEnum::to_possible_value)))
    }
}

pub(crate) fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A number above zero: the replay divides the trace's times by it.
pub(crate) fn positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x > 0.0 => Ok(x),
        Ok(_) => Err("must be above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn not_negative(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if x >= 0.0 => Ok(x),
        Ok(_) => Err("must not be negative".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn block_size(value: &str) -> Result<BlockSize, String> {
    let tokens = value.parse::<u32>().map_err(|e| e.to_string())?;
    BlockSize::new(tokens).map_err(|e| e.to_string())
}

/// A profiling table: `{"prefill": [[tokens, ms], ...], "decode": [[kv_usage, ms], ...]}`.
fn timing_table(path: &str) -> Result<TimingModel, String> {
    #[derive(serde::Deserialize)]
    struct Table {
        prefill: Vec<(f64, f64)>,
        decode: Vec<(f64, f64)>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let table: Table =
        serde_json::from_str(&text).map_err(|e| format!("not a profiling table: {e}"))?;
    let model = InterpolatedTiming::new(table.prefill, table.decode).map_err(|e| e.to_string())?;
    Ok(TimingModel::Interpolated(model))
}

#[cfg(test)]
mod tests;
