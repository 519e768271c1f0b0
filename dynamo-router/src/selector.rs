//! Choosing a worker and booking its load in one step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dynamo_core::{BlockSize, GenerateRequest, SequenceHash, WorkerId};
use parking_lot::Mutex;

use crate::affinity::{AffinityConfig, SessionAffinity};
use crate::busy::BusyThresholds;
use crate::health::ReportedLoad;
use crate::index::{Overlaps, TierOverlap};
use crate::load::{Charge, LoadGuard, LoadTracker, StateCache, WorkerLoad};
use crate::policy::{Decision, RouteContext, Router, WorkerState};
use crate::source::OverlapSource;

/// A request as the router sees it: its block hashes, computed once, and its hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRequest {
    /// The sequence hashes of the prompt's full blocks.
    pub blocks: Vec<SequenceHash>,
    /// The prompt's length in tokens.
    pub prompt_tokens: u64,
    /// The expected number of output tokens, if hinted (of each sequence).
    pub expected_output_tokens: Option<u32>,
    /// The sequences it decodes: its `n` where the engine forks it into `n` choices after one
    /// prefill ([`GenerateRequest::n`]), else 1. The worker's load counts each (0 counts
    /// as 1).
    pub sequences: u32,
    /// The session the request belongs to, for session affinity.
    pub session_id: Option<String>,
    /// The scheduling priority if it must wait; lower is served first.
    pub priority: i32,
}

impl RouteRequest {
    /// Hash `request`'s prompt into blocks of `block_size` (with its LoRA adapter and cache
    /// salt) and take its routing hints.
    pub fn new(request: &GenerateRequest, block_size: BlockSize) -> Self {
        RouteRequest {
            blocks: request
                .block_hasher(block_size)
                .sequence_hashes(&request.tokens),
            prompt_tokens: request.tokens.len() as u64,
            expected_output_tokens: request.routing.expected_output_tokens,
            sequences: request.n.max(1),
            session_id: request.routing.session_id.clone(),
            priority: request.routing.priority,
        }
    }
}

/// A request placed on a worker, its load booked.
#[derive(Debug)]
pub struct Routed {
    /// The chosen worker.
    pub worker: WorkerId,
    /// The prompt's cached prefix on the worker, by tier.
    pub cached: TierOverlap,
    /// The prompt's leading blocks held by the worker's other active requests.
    pub in_flight: u32,
    /// The booked load; dropping it releases the load.
    pub guard: LoadGuard,
}

/// Why a request was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotRouted {
    /// The router knows no worker.
    #[error("no worker is available")]
    NoWorkers,
    /// Every worker is busy, or the policy asked to wait: the request should queue.
    #[error("every worker is busy")]
    AllBusy {
        /// The fewest prompt tokens any worker would have to compute, for queue ordering.
        uncached_tokens: u64,
    },
    /// The policy refused the request.
    #[error("the router is overloaded")]
    Overloaded,
    /// The policy chose a worker that was not offered to it (a bug in the policy).
    #[error("the policy chose worker {0}, which is not eligible")]
    IneligibleChoice(WorkerId),
}

/// The settings of a [`WorkerSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectorConfig {
    /// The block size requests are hashed with; the same as the engines' and the index's.
    pub block_size: BlockSize,
    /// When a worker counts as busy.
    pub thresholds: BusyThresholds,
    /// Keep the requests of one session on one worker; off by default.
    pub affinity: Option<AffinityConfig>,
}

impl SelectorConfig {
    /// Blocks of `block_size` tokens, no thresholds, no session affinity.
    pub fn new(block_size: BlockSize) -> Self {
        SelectorConfig {
            block_size,
            thresholds: BusyThresholds::default(),
            affinity: None,
        }
    }
}

/// The eligible workers and what a decision reuses from one to the next.
#[derive(Debug)]
struct Membership {
    /// The members, sorted by id.
    workers: Vec<WorkerId>,
    /// Each member's slot in the load tracker (same order).
    slots: Vec<u32>,
    /// Each member's place in `workers`: the workers an overlap answer lists are found with
    /// one probe each rather than a binary search.
    places: Places,
    /// Each member's `dynamo_router_decisions_total` key, made once rather than per decision.
    decision_keys: Vec<metrics::Key>,
    affinity: Option<SessionAffinity>,
    /// Every member's state for the decision being made, kept for the next one.
    states: StateCache,
    /// The members that are not busy, when thresholds are set.
    eligible: Vec<WorkerState>,
    /// The overlap source's answer for the decision being made; its buffer is reused.
    answer: Overlaps,
    /// Each member's last reported load, in the members' order; empty while no member has
    /// one, so that a decision then reads nothing more.
    reported: Vec<Option<ReportedLoad>>,
    /// The last reported load of every worker that has one, member or not (a withdrawn
    /// worker's counts again when it returns); as many as the caller reports on.
    reports: HashMap<WorkerId, ReportedLoad>,
}

impl Membership {
    fn new(affinity: Option<SessionAffinity>) -> Self {
        Membership {
            workers: Vec::new(),
            slots: Vec::new(),
            places: Places::default(),
            decision_keys: Vec::new(),
            affinity,
            states: StateCache::default(),
            eligible: Vec::new(),
            answer: Overlaps::default(),
            reported: Vec::new(),
            reports: HashMap::new(),
        }
    }

    fn contains(&self, worker: WorkerId) -> bool {
        self.workers.binary_search(&worker).is_ok()
    }

    /// After a member joined or left: every member's place again.
    fn reindex(&mut self) {
        self.places.rebuild(&self.workers);
        self.states.invalidate();
        self.place_reports();
    }

    /// Each member's report in `reported`, or nothing there when no member has one.
    fn place_reports(&mut self) {
        self.reported.clear();
        if self.workers.iter().any(|w| self.reports.contains_key(w)) {
            let reports = &self.reports;
            let placed = self.workers.iter().map(|w| reports.get(w).copied());
            self.reported.extend(placed);
        }
    }
}

/// Each member's place among the members, by worker id: an open-addressed table at most half
/// full, whose slot for an id is a multiplication of the id away, so that a look-up is usually
/// one read. The mix is fixed (worker ids are the cluster's, not chosen by clients); it was a
/// `HashMap` whose hashing and group probe cost more, once per worker of each overlap answer.
#[derive(Debug, Default)]
struct Places {
    /// Each entry's worker and its place plus one; 0 marks an empty entry.
    entries: Vec<(WorkerId, u32)>,
    /// 64 less the log2 of the entries' number: the mix's top bits name the home entry.
    shift: u32,
}

impl Places {
    /// The places of `workers`, each its position.
    fn rebuild(&mut self, workers: &[WorkerId]) {
        let size = (workers.len() * 2).next_power_of_two().max(8);
        self.entries.clear();
        self.entries.resize(size, (WorkerId::new(0), 0));
        self.shift = 64 - size.trailing_zeros();
        let mask = size - 1;
        for (place, &worker) in (1..).zip(workers) {
            let mut at = self.home(worker);
            while self.entries[at].1 != 0 {
                at = (at + 1) & mask;
            }
            self.entries[at] = (worker, place);
        }
    }

    /// Where `worker`'s look-up starts.
    #[inline(always)]
    fn home(&self, worker: WorkerId) -> usize {
        let id = worker.worker ^ u64::from(worker.dp_rank).rotate_right(16);
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// `worker`'s place, if it is a member.
    #[inline(always)]
    fn get(&self, worker: WorkerId) -> Option<u32> {
        let mask = self.entries.len().checked_sub(1)?;
        let mut at = self.home(worker);
        loop {
            let (id, place) = *self.entries.get(at)?;
            if place == 0 {
                return None;
            }
            if id == worker {
                return Some(place - 1);
            }
            at = (at + 1) & mask;
        }
    }
}

struct Inner {
    config: SelectorConfig,
    policy: Box<dyn Router>,
    /// Whether the policy reads cached prefixes: if not, its decisions are not recorded.
    reads_overlaps: bool,
    source: Box<dyn OverlapSource>,
    load: LoadTracker,
    /// Held from the snapshot to the booking, so that no two decisions see the same load.
    membership: Mutex<Membership>,
}

/// The routing core without I/O: snapshot the workers, let the policy choose, book the load.
///
/// Taking the snapshot, deciding and booking happen under one lock, so concurrent requests
/// never decide on the same stale load (the herding failure of cache-aware routers), and the
/// only way to obtain a decision is with its [`LoadGuard`]. The tower service
/// ([`RouterService`](crate::RouterService)) and the trace replay both route through it.
///
/// ```
/// use std::time::Instant;
/// use dynamo_core::{BlockSize, GenerateRequest, WorkerId};
/// use dynamo_router::{KvCost, RouteRequest, SelectorConfig, SharedIndex, WorkerSelector};
///
/// let block_size = BlockSize::new(4)?;
/// let selector = WorkerSelector::new(
///     SelectorConfig::new(block_size),
///     KvCost::default(),
///     SharedIndex::new(block_size),
/// );
/// selector.insert_worker(WorkerId::new(1));
/// selector.insert_worker(WorkerId::new(2));
///
/// let request = GenerateRequest::new("r1", "m", (0..16).collect::<Vec<u32>>());
/// let first = selector.select(&RouteRequest::new(&request, block_size), Instant::now())?;
/// // The first request's load is booked, so an identical second one goes to the other worker.
/// let second = selector.select(&RouteRequest::new(&request, block_size), Instant::now())?;
/// assert_ne!(first.worker, second.worker);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WorkerSelector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkerSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSelector")
            .field("config", &self.inner.config)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl WorkerSelector {
    /// A selector with no workers yet.
    pub fn new(config: SelectorConfig, policy: impl Router, source: impl OverlapSource) -> Self {
        Self::with_load(config, policy, source, LoadTracker::new())
    }

    /// A selector that books on `load`, which may hold other bookings too: those of other
    /// router replicas ([`ReplicaState::load`](crate::replicas::ReplicaState::load)).
    pub fn with_load(
        config: SelectorConfig,
        policy: impl Router,
        source: impl OverlapSource,
        load: LoadTracker,
    ) -> Self {
        WorkerSelector {
            inner: Arc::new(Inner {
                config,
                reads_overlaps: policy.reads_overlaps(),
                policy: Box::new(policy),
                source: Box::new(source),
                load,
                membership: Mutex::new(Membership::new(config.affinity.map(SessionAffinity::new))),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SelectorConfig {
        &self.inner.config
    }

    /// The load booked on every worker.
    pub fn load(&self) -> &LoadTracker {
        &self.inner.load
    }

    /// Make `worker` eligible for routing.
    pub fn insert_worker(&self, worker: WorkerId) {
        let mut membership = self.inner.membership.lock();
        if let Err(at) = membership.workers.binary_search(&worker) {
            let slot = self.inner.load.register(worker);
            let key = metrics::Key::from_parts(
                "dynamo_router_decisions_total",
                vec![metrics::Label::new("worker", worker.to_string())],
            );
            membership.workers.insert(at, worker);
            membership.slots.insert(at, slot);
            membership.decision_keys.insert(at, key);
            membership.reindex();
        }
    }

    /// Stop routing to `worker` and forget what it caches. Its active requests keep their
    /// bookings until they end.
    pub fn remove_worker(&self, worker: WorkerId) {
        self.withdraw_worker(worker);
        self.forget_worker(worker);
    }

    /// Stop routing to `worker`, but remember what it caches, for a worker that may come back
    /// (a dropped connection); [`forget_worker`](Self::forget_worker) when it will not.
    pub fn withdraw_worker(&self, worker: WorkerId) {
        let mut membership = self.inner.membership.lock();
        if let Ok(at) = membership.workers.binary_search(&worker) {
            membership.workers.remove(at);
            membership.slots.remove(at);
            membership.decision_keys.remove(at);
            membership.reindex();
        }
        if let Some(affinity) = &mut membership.affinity {
            affinity.remove_worker(worker);
        }
    }

    /// Forget what a worker that is not routed to caches, and its load history.
    pub fn forget_worker(&self, worker: WorkerId) {
        // Held throughout, so that the worker cannot join again (and take its load slot)
        // between the check and the forgetting.
        let membership = self.inner.membership.lock();
        if membership.contains(worker) {
            return;
        }
        self.inner.source.remove_worker(worker);
        self.inner.load.forget_idle(worker);
    }

    /// Whether some worker is not busy, or there is no worker at all (a request then fails at
    /// once rather than waiting). A worker's fresh [`ReportedLoad`] counts by its requests
    /// alone here (no request is being routed, so none gives them a size).
    pub fn has_free_worker(&self) -> bool {
        let membership = self.inner.membership.lock();
        let thresholds = self.inner.config.thresholds;
        if membership.workers.is_empty() || thresholds == BusyThresholds::default() {
            return true;
        }
        let free = |load: &WorkerLoad| !thresholds.is_busy(load);
        if membership.reported.is_empty() {
            let load = |&worker| self.inner.load.load(worker);
            return membership.workers.iter().map(load).any(|l| free(&l));
        }
        // Tokio's clock, which the router's service reads too (paused-time tests set it).
        let now = tokio::time::Instant::now().into_std();
        let sizeless = RouteContext {
            blocks: &[],
            prompt_tokens: 0,
            block_size: self.inner.config.block_size,
            expected_output_tokens: None,
        };
        membership.workers.iter().enumerate().any(|(at, &worker)| {
            let mut load = self.inner.load.load(worker);
            let report = membership.reported.get(at).copied().flatten();
            if let Some(report) = report.filter(|r| r.is_fresh(now)) {
                report.raise(&mut load, &sizeless);
            }
            free(&load)
        })
    }

    /// Record `worker`'s reported load, or forget it (`None`); see
    /// [`RouterService::report_load`](crate::RouterService::report_load), which also wakes a
    /// waiting request to look again.
    pub fn report_load(&self, worker: WorkerId, report: Option<ReportedLoad>) {
        let mut membership = self.inner.membership.lock();
        let replaced = match report {
            Some(report) => membership.reports.insert(worker, report).is_some(),
            None => membership.reports.remove(&worker).is_some(),
        };
        if let Ok(at) = membership.workers.binary_search(&worker) {
            match membership.reported.get_mut(at) {
                // The usual case: a member's report replaced by its next one.
                Some(place) if replaced && report.is_some() => *place = report,
                // A member's first report, or its last one forgotten: every place again.
                _ => membership.place_reports(),
            }
        }
    }

    /// `worker`'s last reported load, fresh or not.
    pub(crate) fn reported_load(&self, worker: WorkerId) -> Option<ReportedLoad> {
        self.inner.membership.lock().reports.get(&worker).copied()
    }

    /// The workers eligible for routing, by id.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.inner.membership.lock().workers.clone()
    }

    /// Choose a worker for `request` at `now` and book the request's load on it.
    ///
    /// # Errors
    ///
    /// [`NotRouted`] says why no worker was chosen; nothing is booked then.
    pub fn select(&self, request: &RouteRequest, now: Instant) -> Result<Routed, NotRouted> {
        let inner = &*self.inner;
        let mut membership = inner.membership.lock();
        let Membership {
            workers,
            slots,
            places,
            decision_keys,
            affinity,
            states,
            eligible,
            answer,
            reported,
            reports: _,
        } = &mut *membership;
        if workers.is_empty() {
            return Err(NotRouted::NoWorkers);
        }
        inner.source.overlaps_into(&request.blocks, now, answer);
        self.snapshot(workers, slots, places, states, answer, request);
        let states = states.states();
        let thresholds = inner.config.thresholds;
        let eligible: &[WorkerState] = if !reported.is_empty() {
            let context = self.context(request);
            raise_reported(states, reported, (thresholds, &context, now), eligible);
            eligible
        } else if thresholds == BusyThresholds::default() {
            // No limit: no worker is ever busy.
            states
        } else {
            eligible.clear();
            eligible.extend(states.iter().filter(|w| !thresholds.is_busy(&w.load)));
            eligible
        };
        if eligible.is_empty() {
            return Err(self.all_busy(request, states));
        }
        let bound = match (&*affinity, &request.session_id) {
            (Some(affinity), Some(session)) => affinity
                .worker(session, now)
                .filter(|w| eligible.iter().any(|e| e.worker == *w)),
            _ => None,
        };
        let decision = match bound {
            Some(worker) => Decision::Route(worker),
            None => inner.policy.route(&self.context(request), eligible),
        };
        let chosen = match decision {
            // The eligible workers are sorted by id, as the members are.
            Decision::Route(worker) => eligible
                .binary_search_by_key(&worker, |w| w.worker)
                .ok()
                .and_then(|at| eligible.get(at))
                .ok_or(NotRouted::IneligibleChoice(worker))?,
            Decision::Queue => return Err(self.all_busy(request, eligible)),
            Decision::Overloaded => return Err(NotRouted::Overloaded),
        };
        let member = workers
            .binary_search(&chosen.worker)
            .map_err(|_| NotRouted::IneligibleChoice(chosen.worker))?;
        let sequences = request.sequences.max(1);
        let expected_output_tokens =
            request.expected_output_tokens.map_or(0, u64::from) * u64::from(sequences);
        let charge = Charge::new(
            self.uncached_tokens(request, chosen),
            expected_output_tokens,
            sequences,
        );
        let guard = inner
            .load
            .book_slot(chosen.worker, slots[member], &request.blocks, charge);
        if inner.reads_overlaps {
            // Approximate mode learns from the decisions, for the policy's later ones.
            inner.source.routed(chosen.worker, &request.blocks, now);
        }
        if let (Some(affinity), Some(session)) = (affinity, &request.session_id) {
            affinity.bind(session, chosen.worker, now);
        }
        record_decision(
            &decision_keys[member],
            request,
            chosen,
            inner.config.block_size,
        );
        Ok(Routed {
            worker: chosen.worker,
            cached: chosen.cached,
            in_flight: chosen.in_flight,
            guard,
        })
    }

    /// Bring `states` up to date with every member's state for this request, sorted by
    /// worker id, `answer` the overlap source's for it.
    fn snapshot(
        &self,
        workers: &[WorkerId],
        slots: &[u32],
        places: &Places,
        states: &mut StateCache,
        answer: &Overlaps,
        request: &RouteRequest,
    ) {
        self.inner
            .load
            .snapshot(workers, slots, states, &request.blocks);
        // Find each worker that holds some of the prefix among the members.
        for (worker, overlap) in answer.iter() {
            if let Some(at) = places.get(worker) {
                states.set_cached(at as usize, overlap);
            }
        }
    }

    /// What the policy knows of `request`.
    fn context<'a>(&self, request: &'a RouteRequest) -> RouteContext<'a> {
        RouteContext {
            blocks: &request.blocks,
            prompt_tokens: request.prompt_tokens,
            block_size: self.inner.config.block_size,
            expected_output_tokens: request.expected_output_tokens,
        }
    }

    /// The request must wait; it is queued by the least work any of `workers` would do for it.
    fn all_busy(&self, request: &RouteRequest, workers: &[WorkerState]) -> NotRouted {
        let uncached_tokens = workers
            .iter()
            .map(|w| self.uncached_tokens(request, w))
            .min()
            .unwrap_or(request.prompt_tokens);
        NotRouted::AllBusy { uncached_tokens }
    }

    /// The prompt tokens `worker` would compute: those past its cached or in-flight prefix.
    fn uncached_tokens(&self, request: &RouteRequest, worker: &WorkerState) -> u64 {
        let held = worker.cached.total().max(worker.in_flight);
        let held_tokens = u64::from(held) * u64::from(self.inner.config.block_size.get());
        request.prompt_tokens.saturating_sub(held_tokens)
    }
}

/// Fill `eligible` with the members of `states` that are not busy once each one's booked load
/// is raised to its fresh report in `reported` (same order), raised so for the policy too. Out
/// of line: a decision takes this path only while some member has a report.
#[inline(never)]
fn raise_reported(
    states: &[WorkerState],
    reported: &[Option<ReportedLoad>],
    (thresholds, context, now): (BusyThresholds, &RouteContext<'_>, Instant),
    eligible: &mut Vec<WorkerState>,
) {
    eligible.clear();
    for (state, report) in states.iter().zip(reported) {
        let mut state = *state;
        if let Some(report) = report.filter(|r| r.is_fresh(now)) {
            report.raise(&mut state.load, context);
        }
        if !thresholds.is_busy(&state.load) {
            eligible.push(state);
        }
    }
}

/// The metadata of the decision counter, as `metrics::counter!` would make it here.
static DECISION_METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn record_decision(
    decisions: &metrics::Key,
    request: &RouteRequest,
    chosen: &WorkerState,
    block_size: BlockSize,
) {
    // The worker's key was made when it joined: no label string is allocated per decision.
    metrics::with_recorder(|recorder| {
        recorder
            .register_counter(decisions, &DECISION_METADATA)
            .increment(1);
    });
    let cached = chosen.cached.total();
    metrics::histogram!("dynamo_router_overlap_blocks").record(f64::from(cached));
    if request.prompt_tokens > 0 {
        let cached_tokens =
            (u64::from(cached) * u64::from(block_size.get())).min(request.prompt_tokens);
        metrics::histogram!("dynamo_router_cache_hit_ratio")
            .record(cached_tokens as f64 / request.prompt_tokens as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_find_every_member_and_no_one_else() {
        let mut state = 0x853C_49E6_748F_EA9Bu64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 11
        };
        let mut places = Places::default();
        assert_eq!(places.get(WorkerId::new(0)), None);
        for n in [0usize, 1, 2, 3, 7, 8, 9, 64, 65, 300] {
            // Dense ids, ids far apart, and data-parallel ranks of one instance.
            let mut workers: Vec<WorkerId> = (0..n as u64)
                .map(|i| match i % 3 {
                    0 => WorkerId::new(i),
                    1 => WorkerId::new(next()),
                    _ => WorkerId::new(7).with_dp_rank(i as u32),
                })
                .collect();
            workers.sort();
            workers.dedup();
            places.rebuild(&workers);
            for (at, &worker) in workers.iter().enumerate() {
                assert_eq!(places.get(worker), Some(at as u32), "{worker}");
            }
            for _ in 0..100 {
                let stranger = WorkerId::new(next()).with_dp_rank(next() as u32 % 4);
                let expected = workers.binary_search(&stranger).ok().map(|at| at as u32);
                assert_eq!(places.get(stranger), expected);
            }
        }
    }
}
