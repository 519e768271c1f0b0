//! Virtual-clock replay: a trace through N simulated workers and a real router.
//!
//! A discrete-event simulation: the clock jumps from event to event (an arrival, the end of a
//! worker's step, the delivery of KV events), so a trace of hours replays in seconds. Each
//! arrival is routed by a real [`WorkerSelector`](dynamo_router::WorkerSelector) (the policy,
//! the load booking, the index or the approximate predictions), the chosen worker's engine
//! steps as [`SimWorker`](crate::SimWorker) says, and its KV events reach the router's index
//! after a configurable lag. The simulation itself is in `simulation.rs`.

mod disagg;
mod planner;
mod replicas;
mod simulation;

use std::collections::HashSet;
use std::fmt;

use dynamo_core::WorkerId;
use dynamo_planner::{Planner, WorkerGpus};
use dynamo_router::disagg::{AlwaysRemote, PlacementPolicy};
use dynamo_router::{ApproxConfig, OverlapSource, RoundRobin, Router, SharedIndex};
use tower::discover::Change;

use crate::Error;
use crate::engine::EngineConfig;
use crate::summary::{RequestRecord, Summary};
use crate::timing::TimingModel;
use crate::trace::{TraceRequest, engine_blocks};

pub use disagg::{DisaggConfig, TransferConfig};
pub use planner::{PlannerReplayConfig, ReplicaPoint, Sla};
pub use replicas::RouterReplicas;

/// The settings of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    /// Simulated workers (aggregated replays; a disaggregated one sizes its pools in
    /// [`disagg`](Self::disagg)).
    pub workers: usize,
    /// Separate prefill and decode pools instead of `workers` aggregated ones. Default none.
    pub disagg: Option<DisaggConfig>,
    /// Each worker's engine.
    pub engine: EngineConfig,
    /// How long each engine step takes. Default: the public polynomial model.
    pub timing: TimingModel,
    /// Tokens per trace block (`hash_ids` entry). Default 512.
    pub trace_block_size: u64,
    /// Arrivals are this many times faster than in the trace. Default 1.
    pub arrival_speedup: f64,
    /// KV events reach the router's index this long after the step that caused them. Default 0.
    pub event_lag_ms: f64,
    /// At most this many requests in the system at once; later arrivals wait. Default none.
    pub max_in_flight: Option<usize>,
    /// Workers added or removed during the replay (a planner's decisions, say); see
    /// [`MembershipChange`].
    pub membership: Vec<MembershipChange>,
    /// The GPUs each worker holds, by role: what [`Summary::gpu_hours`] counts. The replay's
    /// engine times a worker's steps the same whatever its GPUs; give it the timing of the
    /// deployment's worker (a `--timing-table` measured on it, say). Default one each.
    pub worker_gpus: WorkerGpus,
}

/// A change to the set of workers at a point of the replay.
///
/// The replay starts with workers `0..workers` ([`WorkerId::new`]). [`Change::Insert`] adds a
/// worker with an empty cache under an id that no worker of the replay has had;
/// [`Change::Remove`] stops routing to a worker, whose requests run to their end.
///
/// ```
/// use dynamo_core::WorkerId;
/// use dynamo_mocker::{MembershipChange, ReplayConfig};
/// use tower::discover::Change;
///
/// // Workers 0 to 7; a minute in, worker 8 joins and worker 0 leaves.
/// let config = ReplayConfig {
///     workers: 8,
///     membership: vec![
///         MembershipChange { at_ms: 60_000.0, change: Change::Insert(WorkerId::new(8), ()) },
///         MembershipChange { at_ms: 60_000.0, change: Change::Remove(WorkerId::new(0)) },
///     ],
///     ..ReplayConfig::default()
/// };
/// # assert_eq!(config.membership.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct MembershipChange {
    /// When, in ms of virtual time. Changes at the same time apply in their order in
    /// [`ReplayConfig::membership`].
    pub at_ms: f64,
    /// What.
    pub change: Change<WorkerId, ()>,
}

impl PartialEq for MembershipChange {
    fn eq(&self, other: &Self) -> bool {
        let same_change = match (&self.change, &other.change) {
            (Change::Insert(a, ()), Change::Insert(b, ())) => a == b,
            (Change::Remove(a), Change::Remove(b)) => a == b,
            _ => false,
        };
        self.at_ms == other.at_ms && same_change
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            workers: 8,
            disagg: None,
            engine: EngineConfig::default(),
            timing: TimingModel::default(),
            trace_block_size: 512,
            arrival_speedup: 1.0,
            event_lag_ms: 0.0,
            max_in_flight: None,
            membership: Vec::new(),
            worker_gpus: WorkerGpus::default(),
        }
    }
}

/// Where the router learns what the workers cache.
#[derive(Debug, Clone)]
pub enum CacheKnowledge {
    /// The workers' KV events, applied to this index.
    Events(SharedIndex),
    /// Approximate mode: an [`ApproxIndex`](dynamo_router::ApproxIndex) of these settings
    /// (one per router replica); the workers' events are dropped.
    Approximate(ApproxConfig),
    /// Any other source; the workers' events are dropped. Router replicas all read this one.
    Other(std::sync::Arc<dyn OverlapSource>),
    /// None: for cache-blind policies, which never look at overlaps.
    Nothing,
}

/// What a replay measured.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// The summary.
    pub summary: Summary,
    /// Every request of the trace, in trace order.
    pub records: Vec<RequestRecord>,
}

/// A replay of a trace through simulated workers and a router, ready to [`run`](Replay::run).
///
/// It routes round-robin over cache-blind workers until told otherwise; a cache-aware policy
/// wants [`CacheKnowledge::Events`] or [`CacheKnowledge::Other`] as its knowledge.
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_mocker::{CacheKnowledge, Replay, ReplayConfig, TraceRequest};
/// use dynamo_router::{KvCost, SharedIndex};
///
/// let trace = vec![
///     TraceRequest { timestamp: 0.0, input_length: 1024, output_length: 4, hash_ids: vec![1, 2] },
///     TraceRequest { timestamp: 500.0, input_length: 1024, output_length: 4, hash_ids: vec![1, 3] },
/// ];
/// let config = ReplayConfig { workers: 2, ..ReplayConfig::default() };
/// // Round-robin sends the two requests to different workers.
/// let blind = Replay::new(&trace, &config).label("round-robin").run()?;
/// assert_ne!(blind.records[0].worker, blind.records[1].worker);
/// // The KV router, fed by the workers' events, sends the second where its prefix is cached.
/// let mut reported = Vec::new();
/// let kv = Replay::new(&trace, &config)
///     .label("kv")
///     .policy(KvCost::default())
///     .knowledge(CacheKnowledge::Events(SharedIndex::new(BlockSize::new(64)?)))
///     .progress(|finished, total| reported.push((finished, total)))
///     .run()?;
/// assert_eq!(kv.records[0].worker, kv.records[1].worker);
/// assert_eq!(kv.summary.router, "kv");
/// assert_eq!(reported, [(1, 2), (2, 2)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Replay<'a, P = RoundRobin> {
    trace: &'a [TraceRequest],
    config: &'a ReplayConfig,
    label: String,
    policy: P,
    knowledge: CacheKnowledge,
    /// The decode pool's policy and knowledge, when set.
    decode: Option<(Box<dyn Router>, CacheKnowledge)>,
    /// The decode pool's policy for handed-over requests, when set.
    handoff: Option<Box<dyn Router>>,
    placement: Box<dyn PlacementPolicy>,
    progress: Option<Box<dyn FnMut(usize, usize) + 'a>>,
    planner: Option<(Planner, PlannerReplayConfig)>,
    sla: Option<Sla>,
    router_replicas: RouterReplicas,
}

impl<P: fmt::Debug> fmt::Debug for Replay<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("requests", &self.trace.len())
            .field("config", self.config)
            .field("label", &self.label)
            .field("policy", &self.policy)
            .field("knowledge", &self.knowledge)
            .field("decode", &self.decode)
            .field("handoff", &self.handoff)
            .field("placement", &self.placement)
            .field("progress", &self.progress.is_some())
            .field("planner", &self.planner)
            .field("sla", &self.sla)
            .field("router_replicas", &self.router_replicas)
            .finish()
    }
}

impl<'a> Replay<'a> {
    /// A replay of `trace` through `config.workers` simulated workers, routed
    /// round-robin, with no cache knowledge and an empty label.
    pub fn new(trace: &'a [TraceRequest], config: &'a ReplayConfig) -> Self {
        Replay {
            trace,
            config,
            label: String::new(),
            policy: RoundRobin::new(),
            knowledge: CacheKnowledge::Nothing,
            decode: None,
            handoff: None,
            placement: Box::new(AlwaysRemote),
            progress: None,
            planner: None,
            sla: None,
            router_replicas: RouterReplicas::default(),
        }
    }
}

impl<'a, P> Replay<'a, P> {
    /// Label the summary with `label` ([`Summary::router`]).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Route with `policy`.
    pub fn policy<Q: Router>(self, policy: Q) -> Replay<'a, Q> {
        Replay {
            trace: self.trace,
            config: self.config,
            label: self.label,
            policy,
            knowledge: self.knowledge,
            decode: self.decode,
            handoff: self.handoff,
            placement: self.placement,
            progress: self.progress,
            planner: self.planner,
            sla: self.sla,
            router_replicas: self.router_replicas,
        }
    }

    /// In a disaggregated replay, choose the decode worker that would compute a prompt
    /// locally with `policy`, which learns the decode workers' caches from `knowledge` (the
    /// placement policy then compares it with the prefill worker). Default: NVIDIA Dynamo's
    /// decode router (its KV cost without the prefill term: the least active blocks win), over
    /// an index of the decode workers' events.
    pub fn decode_policy(mut self, policy: impl Router, knowledge: CacheKnowledge) -> Self {
        self.decode = Some((Box::new(policy), knowledge));
        self
    }

    /// In a disaggregated replay, choose the decode worker of a request whose prompt a
    /// prefill worker computed with `policy`, when the prefill ends. Default: NVIDIA Dynamo's
    /// decode router, as for [`decode_policy`](Self::decode_policy).
    pub fn handoff_policy(mut self, policy: impl Router) -> Self {
        self.handoff = Some(Box::new(policy));
        self
    }

    /// In a disaggregated replay, decide per request between remote and local prefill with
    /// `placement`. Default [`AlwaysRemote`].
    pub fn placement(mut self, placement: impl PlacementPolicy) -> Self {
        self.placement = Box::new(placement);
        self
    }

    /// Where the router learns what the workers cache. Default [`CacheKnowledge::Nothing`].
    pub fn knowledge(mut self, knowledge: CacheKnowledge) -> Self {
        self.knowledge = knowledge;
        self
    }

    /// Let `planner` size the pool as the replay goes (or the prefill and decode pools of a
    /// disaggregated replay), starting from [`ReplayConfig::workers`] (or the pools' sizes in
    /// [`ReplayConfig::disagg`]): every planning interval of virtual time it observes the
    /// interval that ended and its decision is played out as `config` says. The summary then
    /// has the replica timeline ([`Summary::replicas`]).
    ///
    /// ```
    /// use dynamo_mocker::{PlannerReplayConfig, Replay, ReplayConfig, Sla, TraceRequest};
    /// use dynamo_planner::policy::{Forecast, Policy, Proposal};
    /// use dynamo_planner::predict::{Constant, Predictor};
    /// use dynamo_planner::{Observation, Planner, PlannerConfig, Replicas};
    ///
    /// /// One worker per request a second, rounded up.
    /// struct PerRequest;
    /// impl Policy for PerRequest {
    ///     fn name(&self) -> &'static str { "per-request" }
    ///     fn plan(&mut self, _: &Observation, forecast: &Forecast, _: Replicas) -> Proposal {
    ///         let target = Replicas::Aggregated(forecast.requests_per_s.ceil() as usize);
    ///         Proposal::new(target, "one worker per request a second")
    ///     }
    /// }
    ///
    /// // Three requests a second for a minute.
    /// let trace: Vec<TraceRequest> = (0..180)
    ///     .map(|i| TraceRequest {
    ///         timestamp: i as f64 * 1000.0 / 3.0,
    ///         input_length: 512,
    ///         output_length: 8,
    ///         hash_ids: vec![i],
    ///     })
    ///     .collect();
    /// let config = ReplayConfig { workers: 1, ..ReplayConfig::default() };
    /// let planner_config = PlannerConfig { interval_s: 10.0, ..PlannerConfig::default() };
    /// let planner = Planner::new(planner_config, PerRequest, || Box::new(Constant::default()))?;
    /// let outcome = Replay::new(&trace, &config)
    ///     .planner(planner, PlannerReplayConfig { startup_ms: 5_000.0 })
    ///     .sla(Sla { ttft_ms: 500.0, itl_ms: 50.0 })
    ///     .run()?;
    /// let timeline = outcome.summary.replicas.expect("a planner replay");
    /// // The first step, 10 s in, asks for 3 workers; they join 5 s later.
    /// assert_eq!((timeline[1].at_ms, timeline[1].ready, timeline[1].desired), (10_000.0, 1, 3));
    /// assert_eq!((timeline[2].at_ms, timeline[2].ready), (15_000.0, 2));
    /// assert_eq!(outcome.summary.completed_requests, 180);
    /// assert!(outcome.summary.sla_attainment.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn planner(mut self, planner: Planner, config: PlannerReplayConfig) -> Self {
        self.planner = Some((planner, config));
        self
    }

    /// Route with several router replicas, sharing their state or not; see
    /// [`RouterReplicas`]. Default: one.
    pub fn router_replicas(mut self, replicas: RouterReplicas) -> Self {
        self.router_replicas = replicas;
        self
    }

    /// Judge the requests by `sla` ([`Summary::sla_attainment`]).
    pub fn sla(mut self, sla: Sla) -> Self {
        self.sla = Some(sla);
        self
    }

    /// Call `progress(finished, total)` after each percent of the requests finishes, and
    /// after the last.
    pub fn progress(mut self, progress: impl FnMut(usize, usize) + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }
}

impl<P: Router> Replay<'_, P> {
    /// Run the replay to its end, on the virtual clock.
    ///
    /// # Errors
    ///
    /// [`Error::BlockSizes`] when the trace's blocks cannot be cut into engine blocks;
    /// [`Error::WorkerInUse`], [`Error::UnknownWorker`] or [`Error::DataParallelRank`] for a
    /// membership change that cannot apply; [`Error::Disaggregation`] for an empty pool, or
    /// membership changes in a disaggregated replay; [`Error::Planner`] for a planner replay
    /// with membership changes. All are checked before the replay
    /// starts.
    pub fn run(self) -> Result<ReplayOutcome, Error> {
        let speedup = self.config.arrival_speedup;
        if speedup.is_nan() || speedup <= 0.0 {
            return Err(Error::ArrivalSpeedup { value: speedup });
        }
        // Check the block sizes once; each arrival then hashes its own prompt.
        if let Some(first) = self.trace.first() {
            engine_blocks(
                first,
                self.config.trace_block_size,
                self.config.engine.block_size,
            )?;
        }
        check_membership(self.config)?;
        if self.router_replicas.count == 0 {
            return Err(Error::RouterReplicas {
                reason: "at least one router replica is needed",
            });
        }
        if self.router_replicas.count > 1
            && (self.config.disagg.is_some() || self.planner.is_some())
        {
            return Err(Error::RouterReplicas {
                reason: "router replicas route an aggregated replay without a planner",
            });
        }
        if self.planner.is_some() && !self.config.membership.is_empty() {
            return Err(Error::Planner {
                reason: "a planner replay takes no membership changes: the planner decides them",
            });
        }
        if let Some(disagg) = &self.config.disagg {
            let reason = if disagg.prefill_workers == 0 || disagg.decode_workers == 0 {
                Some("each pool needs at least one worker")
            } else if !self.config.membership.is_empty() {
                Some("workers cannot join or leave a disaggregated replay")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::Disaggregation { reason });
            }
        }
        Ok(simulation::run(self))
    }
}

/// Refuse membership changes that cannot apply, taken in the order the replay applies them:
/// a worker that joins under an id in use (or once used), with a data-parallel rank, or a
/// worker that leaves without having been there.
fn check_membership(config: &ReplayConfig) -> Result<(), Error> {
    let mut known: HashSet<WorkerId> = (0..config.workers as u64).map(WorkerId::new).collect();
    let mut changes: Vec<&MembershipChange> = config.membership.iter().collect();
    // Stable: changes at the same time keep their order, as in the event queue.
    changes.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    for &MembershipChange { at_ms, ref change } in changes {
        match *change {
            Change::Insert(worker, ()) if worker.dp_rank != 0 => {
                return Err(Error::DataParallelRank { worker, at_ms });
            }
            Change::Insert(worker, ()) if !known.insert(worker) => {
                return Err(Error::WorkerInUse { worker, at_ms });
            }
            Change::Remove(worker) if !known.contains(&worker) => {
                return Err(Error::UnknownWorker { worker, at_ms });
            }
            Change::Insert(..) | Change::Remove(_) => {}
        }
    }
    Ok(())
}
