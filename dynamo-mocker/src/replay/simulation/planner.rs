//! The planner in the simulation: each planning step observes the interval that ended, asks
//! the [`Planner`], and plays its decision out as a simulated scaler (start-up delay for a
//! worker added, graceful drain for one removed), on the aggregated pool or on the prefill and
//! decode pools of a disaggregated replay. Also how long each worker of a replay was alive.
//!
//! The replay applies decisions itself rather than through a [`dynamo_planner::Scaler`]: the
//! scaler's futures would need an executor and state shared behind locks inside a
//! single-threaded event loop, for no gain; the semantics are the scaler's ([`ReplicaPoint`]'s
//! `desired` and `ready` are [`dynamo_planner::PoolSize`]'s).

use std::collections::HashMap;

use dynamo_core::WorkerId;
use dynamo_planner::policy::PoolRule;
use dynamo_planner::{Observation, Planner, Replicas, WorkerLoad};

use super::events::{Event, IDLE};
use super::{Simulation, Worker, new_worker};
use crate::replay::{PlannerReplayConfig, ReplicaPoint};
use crate::summary::RequestRecord;

/// The planner and the workers it manages.
pub(super) struct PlannerState {
    planner: Planner,
    config: PlannerReplayConfig,
    interval_ms: f64,
    /// The start of the interval being observed.
    since_ms: f64,
    /// The last arrival of the trace: planning goes on at least until then.
    last_arrival_ms: f64,
    /// The id the next worker gets.
    next_id: u64,
    /// Each of [`Simulation::pools`]: the aggregated pool, or the prefill and decode pools.
    pools: Vec<PoolState>,
    pub(super) timeline: Vec<ReplicaPoint>,
}

/// The workers of one pool.
#[derive(Default)]
struct PoolState {
    /// Workers asked for and not yet routed to, by slot, oldest first.
    starting: Vec<usize>,
    /// Workers routed to, by slot, in the order they joined.
    ready: Vec<usize>,
}

impl PoolState {
    fn desired(&self) -> usize {
        self.starting.len() + self.ready.len()
    }
}

impl PlannerState {
    /// The planner of a replay whose pools start with `sizes` workers each, all routed at
    /// time 0, numbered (slots and ids) pool after pool from 0.
    pub(super) fn new(
        planner: Planner,
        config: PlannerReplayConfig,
        sizes: &[usize],
        last_arrival_ms: f64,
    ) -> Self {
        let interval_ms = planner.config().interval_s * 1000.0;
        let mut first = 0;
        let pools = sizes
            .iter()
            .map(|&size| {
                let pool = PoolState {
                    starting: Vec::new(),
                    ready: (first..first + size).collect(),
                };
                first += size;
                pool
            })
            .collect();
        let mut state = PlannerState {
            planner,
            config,
            interval_ms,
            since_ms: 0.0,
            last_arrival_ms,
            next_id: first as u64,
            pools,
            timeline: Vec::new(),
        };
        state.point(0.0, None, Vec::new());
        state
    }

    pub(super) fn interval_ms(&self) -> f64 {
        self.interval_ms
    }

    /// The pools' sizes as the planner counts them: workers asked for, started or not.
    fn current(&self) -> Replicas {
        match self.pools.as_slice() {
            [prefill, decode] => Replicas::Disaggregated {
                prefill: prefill.desired(),
                decode: decode.desired(),
            },
            pools => Replicas::Aggregated(pools.first().map_or(0, PoolState::desired)),
        }
    }

    fn point(&mut self, at_ms: f64, reason: Option<String>, rules: Vec<PoolRule>) {
        let last = self.pools.last();
        let prefill = (self.pools.len() == 2).then(|| &self.pools[0]);
        self.timeline.push(ReplicaPoint {
            at_ms,
            ready: last.map_or(0, |p| p.ready.len()),
            desired: last.map_or(0, PoolState::desired),
            prefill_ready: prefill.map(|p| p.ready.len()),
            prefill_desired: prefill.map(PoolState::desired),
            reason,
            rules,
        });
    }
}

impl Simulation<'_> {
    /// A planning step at `now_ms`: observe, decide, act, and plan again an interval later
    /// while requests remain.
    pub(super) fn plan(&mut self, now_ms: f64) {
        let Some(mut state) = self.planner.take() else {
            return;
        };
        let observation = self.observe(&state, now_ms);
        let current = state.current();
        let decision = state.planner.tick(&observation, current);
        // A target of another shape than the replay's pools (a policy that plans aggregated
        // pools in a disaggregated replay, say) changes nothing.
        let targets = match (decision.target, state.pools.len()) {
            (Replicas::Aggregated(n), 1) => vec![n],
            (Replicas::Disaggregated { prefill, decode }, 2) => vec![prefill, decode],
            _ => Vec::new(),
        };
        if decision.act {
            for (pool, target) in targets.into_iter().enumerate() {
                self.resize(&mut state, pool, target, now_ms);
            }
        }
        state.point(now_ms, Some(decision.reason), decision.rules);
        state.since_ms = now_ms;
        if now_ms < state.last_arrival_ms || self.in_flight > 0 || !self.held_back.is_empty() {
            self.schedule(now_ms + state.interval_ms, Event::Plan);
        }
        self.planner = Some(state);
    }

    /// The interval from `state.since_ms` to `now_ms`, as the gateway's and the workers'
    /// metrics would report it.
    fn observe(&self, state: &PlannerState, now_ms: f64) -> Observation {
        let within = |t: f64| t >= state.since_ms && t < now_ms;
        let (mut requests, mut input, mut output) = (0u64, 0u64, 0u64);
        let (mut first_tokens, mut ttft, mut cached, mut prompted) = (0u64, 0.0, 0u64, 0u64);
        let (mut finished, mut itl) = (0u64, 0.0);
        for record in &self.records {
            if within(record.arrival_ms) {
                requests += 1;
                input += record.input_tokens;
                output += record.output_tokens;
            }
            if let Some(first) = record.first_token_ms
                && within(first)
            {
                first_tokens += 1;
                ttft += first - record.arrival_ms;
                cached += record.cached_tokens;
                prompted += record.input_tokens;
            }
            if let (Some(finish), Some(tpot)) = (record.finish_ms, record.tpot_ms())
                && within(finish)
            {
                finished += 1;
                itl += tpot;
            }
        }
        let per = |sum: u64, n: u64| if n > 0 { sum as f64 / n as f64 } else { 0.0 };
        let workers = state
            .pools
            .iter()
            .enumerate()
            .flat_map(|(pool, p)| p.ready.iter().map(move |&slot| (pool, slot)))
            .map(|(pool, slot)| {
                let metrics = self.workers[slot].engine.metrics();
                WorkerLoad {
                    role: self.role(pool),
                    waiting: metrics.waiting as u64,
                    running: metrics.running as u64,
                    kv_usage: per(metrics.blocks_in_use, metrics.blocks_total),
                }
            })
            .collect();
        Observation {
            interval_s: (now_ms - state.since_ms) / 1000.0,
            requests,
            mean_input_tokens: per(input, requests),
            mean_output_tokens: per(output, requests),
            kv_hit_rate: per(cached, prompted),
            mean_ttft_ms: (first_tokens > 0).then(|| ttft / first_tokens as f64),
            mean_itl_ms: (finished > 0).then(|| itl / finished as f64),
            workers,
            // The replay hears every request.
            traffic_unheard: false,
        }
    }

    /// Ask for `target` workers in `pool`: start new ones, or remove workers still starting
    /// (the newest first), then the least loaded routed ones (the newest among equals).
    fn resize(&mut self, state: &mut PlannerState, pool: usize, target: usize, now_ms: f64) {
        let desired = state.pools[pool].desired();
        for _ in desired..target {
            let slot = self.workers.len();
            let id = WorkerId::new(state.next_id);
            state.next_id += 1;
            let events = self.pools[pool].index.is_some();
            let mut worker = new_worker(id, pool, &self.config, events);
            worker.asked_ms = now_ms;
            self.slots.insert(id, slot);
            self.workers.push(worker);
            self.dues.push(IDLE);
            state.pools[pool].starting.push(slot);
            self.schedule(now_ms + state.config.startup_ms, Event::Ready(slot));
        }
        let state = &mut state.pools[pool];
        let mut surplus = desired.saturating_sub(target);
        while surplus > 0
            && let Some(slot) = state.starting.pop()
        {
            self.workers[slot].removed_ms = Some(now_ms);
            surplus -= 1;
        }
        while surplus > 0 && state.ready.len() > 1 {
            let Some((place, &slot)) = state.ready.iter().enumerate().min_by_key(|&(_, &slot)| {
                let metrics = self.workers[slot].engine.metrics();
                (
                    metrics.waiting + metrics.running,
                    metrics.blocks_in_use,
                    std::cmp::Reverse(slot),
                )
            }) else {
                break;
            };
            state.ready.remove(place);
            self.pools[pool]
                .selector
                .remove_worker(self.workers[slot].id);
            self.workers[slot].removed_ms = Some(now_ms);
            surplus -= 1;
        }
    }

    /// The worker in `slot` has started: route to it, unless it was removed meanwhile.
    pub(super) fn worker_ready(&mut self, slot: usize, now_ms: f64) {
        let Some(mut state) = self.planner.take() else {
            return;
        };
        let pool = self.workers[slot].pool;
        let starting = &mut state.pools[pool].starting;
        if let Some(place) = starting.iter().position(|&s| s == slot) {
            starting.remove(place);
            state.pools[pool].ready.push(slot);
            self.pools[pool]
                .selector
                .insert_worker(self.workers[slot].id);
            state.point(now_ms, None, Vec::new());
        }
        self.planner = Some(state);
    }
}

/// How long each worker of a replay that ends at `end_ms` was alive, in seconds, in the order
/// of `workers`: from the moment it was asked for until it left (a removed worker leaves when
/// the last request routed to it is done with it, or at once when it had none; one still
/// serving at the end counts to the end).
pub(super) fn alive_seconds(
    workers: &[Worker],
    records: &[RequestRecord],
    end_ms: f64,
) -> Vec<f64> {
    // When each worker is done with its requests; infinity while one is not. A decode (or
    // aggregated) worker is done with a request when it finishes, a prefill worker when the
    // prompt is computed and handed over.
    let mut last: HashMap<u64, f64> = HashMap::new();
    let mut done = |worker: u64, at: Option<f64>| {
        let at = at.unwrap_or(f64::INFINITY);
        let entry = last.entry(worker).or_insert(at);
        *entry = entry.max(at);
    };
    for record in records {
        if record.worker != u64::MAX {
            done(record.worker, record.finish_ms);
        }
        if let Some(prefill) = record.prefill_worker {
            done(prefill, record.prefill_done_ms);
        }
    }
    workers
        .iter()
        .map(|worker| {
            let gone = match worker.removed_ms {
                None => end_ms,
                Some(removed) => {
                    let drained = last.get(&worker.id.worker).copied().unwrap_or(removed);
                    removed.max(drained)
                }
            };
            (gone.min(end_ms) - worker.asked_ms).max(0.0) / 1000.0
        })
        .collect()
}
