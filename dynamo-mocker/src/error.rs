//! The crate's one error type.

use dynamo_core::{BlockSize, WorkerId};

/// What can go wrong with a trace, a timing table or a replay's membership changes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trace file could not be read.
    #[error("cannot read the trace {path}: {source}")]
    ReadTrace {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of a trace is not a request.
    #[error("line {line} of the trace is not a request: {source}")]
    ParseTrace {
        /// The 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// A line of a CSV trace is not a request.
    #[error("line {line} of the CSV trace is not a request: {reason}")]
    ParseCsv {
        /// The 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The trace's block size is not a multiple of the engine's.
    #[error("a trace block of {trace} tokens cannot be cut into engine blocks of {engine}")]
    BlockSizes {
        /// The trace's block size.
        trace: u64,
        /// The engine's block size.
        engine: BlockSize,
    },
    /// A profiling table that cannot be interpolated: empty, with a non-finite value, or with
    /// a repeated input.
    #[error("the {table} table needs at least one point, with finite values and distinct inputs")]
    TimingTable {
        /// `prefill` or `decode`.
        table: &'static str,
    },
    /// The replay's arrival speed-up is not a positive number.
    #[error("the arrival speed-up must be above 0, not {value}")]
    ArrivalSpeedup {
        /// The value given.
        value: f64,
    },
    /// A worker joins a replay under an id that a worker of the replay already has or had.
    #[error("worker {worker} cannot join at {at_ms} ms: the id is already in use")]
    WorkerInUse {
        /// The id.
        worker: WorkerId,
        /// When, in ms of virtual time.
        at_ms: f64,
    },
    /// A worker leaves a replay that never had it.
    #[error("worker {worker} cannot leave at {at_ms} ms: no worker has that id")]
    UnknownWorker {
        /// The id.
        worker: WorkerId,
        /// When, in ms of virtual time.
        at_ms: f64,
    },
    /// A worker joins a replay with a data-parallel rank; the replay simulates whole engines,
    /// numbered by instance.
    #[error(
        "worker {worker} cannot join at {at_ms} ms: a replay's workers have no data-parallel rank"
    )]
    DataParallelRank {
        /// The id.
        worker: WorkerId,
        /// When, in ms of virtual time.
        at_ms: f64,
    },
    /// A profile of the engine that the planner cannot use.
    #[error("the engine's profile is not usable: {source}")]
    Profile {
        /// Why.
        source: dynamo_planner::Error,
    },
    /// A planner replay that cannot run.
    #[error("cannot replay with the planner: {reason}")]
    Planner {
        /// Why.
        reason: &'static str,
    },
    /// A disaggregated replay that cannot run.
    #[error("cannot replay disaggregated: {reason}")]
    Disaggregation {
        /// Why.
        reason: &'static str,
    },
    /// Router replicas asked of a replay that cannot have them.
    #[error("router replicas: {reason}")]
    RouterReplicas {
        /// Why.
        reason: &'static str,
    },
}
