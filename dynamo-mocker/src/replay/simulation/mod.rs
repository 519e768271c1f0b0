//! The discrete-event simulation behind [`Replay::run`]: the event queue, the workers' steps
//! and the delivery of their KV events. The hand-over between the pools of a disaggregated
//! replay is in `disagg.rs`.

mod disagg;
mod events;
mod planner;
mod pool;
mod setup;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use dynamo_core::{KvEvent, StorageTier, WorkerId, WorkerRole};
use dynamo_router::{LoadGuard, Routed, Router, SharedIndex};
use tower::discover::Change;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::disagg::{DecodePool, PrefillPool, decode_load_policy};
use super::{CacheKnowledge, Replay, ReplayConfig, ReplayOutcome};
use crate::engine::{SimRequest, SimWorker, StepReport};
use crate::phases::DisaggSummary;
use crate::summary::{RequestRecord, Summary};
use crate::trace::{TraceRequest, engine_blocks};
use disagg::Disagg;
use events::{Event, IDLE, Scheduled, due_key};
use planner::PlannerState;
use pool::Pool;
use setup::{new_worker, record, route};

/// Run `replay`, whose block sizes and membership changes were checked.
pub(super) fn run<P: Router>(replay: Replay<'_, P>) -> ReplayOutcome {
    let Replay {
        trace,
        config,
        label,
        policy,
        knowledge,
        decode,
        handoff,
        placement,
        progress,
        planner,
        sla,
        router_replicas,
    } = replay;
    let wall = Instant::now();
    // One pool of workers, or a prefill pool (0) and a decode pool (1).
    let (pools, sizes, disagg) = match config.disagg {
        None => (
            vec![Pool::replicated(config, policy, knowledge, router_replicas)],
            vec![config.workers],
            None,
        ),
        Some(setup) => {
            let (decode_policy, decode_knowledge) = decode.unwrap_or_else(|| {
                let index = SharedIndex::new(config.engine.block_size);
                let policy: Box<dyn Router> = Box::new(decode_load_policy(Some(0)));
                (policy, CacheKnowledge::Events(index))
            });
            let handing_over = Arc::new(AtomicBool::new(false));
            let decode_pool = DecodePool {
                local: decode_policy,
                handoff: handoff.unwrap_or_else(|| Box::new(decode_load_policy(Some(0)))),
                handing_over: handing_over.clone(),
            };
            let pools = vec![
                Pool::new(
                    config,
                    PrefillPool {
                        policy,
                        decodes: placement.prefill_workers_decode(),
                    },
                    knowledge,
                ),
                Pool::new(config, decode_pool, decode_knowledge),
            ];
            let sizes = vec![setup.prefill_workers, setup.decode_workers];
            (
                pools,
                sizes,
                Some(Disagg::new(setup, placement, handing_over)),
            )
        }
    };
    let mut workers = Vec::new();
    for (pool, &size) in sizes.iter().enumerate() {
        for _ in 0..size {
            let id = WorkerId::new(workers.len() as u64);
            workers.push(new_worker(id, pool, config, pools[pool].index.is_some()));
        }
    }
    let mut sim = Simulation {
        config: config.clone(),
        trace,
        pools,
        disagg,
        slots: workers
            .iter()
            .enumerate()
            .map(|(slot, worker)| (worker.id, slot))
            .collect(),
        dues: vec![IDLE; workers.len()],
        workers,
        queue: BinaryHeap::new(),
        order: 0,
        records: trace
            .iter()
            .enumerate()
            .map(|(index, request)| record(index, request))
            .collect(),
        guards: HashMap::new(),
        held_back: VecDeque::new(),
        in_flight: 0,
        preemptions: 0,
        epoch: Instant::now(),
        finished: 0,
        progress,
        planner: None,
    };
    for worker in &sim.workers {
        sim.pools[worker.pool].selector.insert_worker(worker.id);
        for selector in sim.pools[worker.pool].other_selectors() {
            selector.insert_worker(worker.id);
        }
    }
    for (i, change) in config.membership.iter().enumerate() {
        sim.schedule(change.at_ms, Event::Membership(i));
    }
    let speedup = config.arrival_speedup.max(f64::MIN_POSITIVE);
    let mut arrivals: Vec<(f64, usize)> = trace
        .iter()
        .enumerate()
        .map(|(index, request)| (request.timestamp / speedup, index))
        .collect();
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    if let Some((planner, planner_config)) = planner {
        let last_arrival_ms = arrivals.last().map_or(0.0, |&(at, _)| at);
        let state = PlannerState::new(planner, planner_config, &sizes, last_arrival_ms);
        sim.schedule(state.interval_ms(), Event::Plan);
        sim.planner = Some(state);
    }
    sim.run(&arrivals);
    let wall_ms = wall.elapsed().as_secs_f64() * 1000.0;
    let mut summary = Summary::of(&label, &sim.records, wall_ms, sim.preemptions);
    let end_ms = sim
        .records
        .iter()
        .flat_map(|r| [r.arrival_ms, r.finish_ms.unwrap_or(f64::NAN)])
        .filter(|t| !t.is_nan())
        .fold(0.0, f64::max);
    let alive = planner::alive_seconds(&sim.workers, &sim.records, end_ms);
    let gpu_seconds: f64 = (sim.workers.iter().zip(&alive))
        .map(|(worker, seconds)| seconds * config.worker_gpus.of(sim.role(worker.pool)) as f64)
        .sum();
    summary.worker_hours = Some(alive.iter().sum::<f64>() / 3600.0);
    summary.gpu_hours = Some(gpu_seconds / 3600.0);
    summary.sla_attainment = sla.map(|sla| sla.attainment(&sim.records));
    summary.replicas = sim.planner.map(|state| state.timeline);
    if sim.disagg.is_some() {
        summary.disagg = Some(DisaggSummary::of(&sim.records));
    }
    ReplayOutcome {
        summary,
        records: sim.records,
    }
}

struct Worker {
    /// The id the router and the records know the worker by.
    id: WorkerId,
    engine: SimWorker,
    /// The step in progress, applied when it ends; its allocations are reused.
    report: StepReport,
    /// When the step in progress ends (meaningful while the worker's entry in
    /// [`Simulation::dues`] is not [`IDLE`]).
    due_ms: f64,
    /// The end of each step of the run in progress, when it is more than one step; the last
    /// is `due_ms`. A run is a step that reports nothing followed by the quiet steps certain
    /// to come after it: nothing outside the worker can see them, so they are run at once and
    /// the replay wakes up at the end of the last.
    run_ends: Vec<f64>,
    next_event_id: u64,
    /// Event batches on their way to the index.
    in_transit: VecDeque<Vec<KvEvent>>,
    /// The worker's pool, in [`Simulation::pools`].
    pool: usize,
    /// When it was asked for (0 for the replay's first workers), in ms of virtual time.
    asked_ms: f64,
    /// When it was told to leave: it gets no more requests and leaves once drained.
    removed_ms: Option<f64>,
}

struct Simulation<'a> {
    config: ReplayConfig,
    trace: &'a [TraceRequest],
    /// The aggregated pool, or the prefill pool and the decode pool.
    pools: Vec<Pool>,
    /// The state of a disaggregated replay.
    disagg: Option<Disagg>,
    /// Every worker the replay has had, removed ones included (their requests run to their
    /// end), in the order they joined.
    workers: Vec<Worker>,
    /// Each worker's place in `workers`, by id.
    slots: HashMap<WorkerId, usize>,
    /// Each worker's [`due_key`], [`IDLE`] when it has no step in progress. Kept here rather
    /// than in the queue: the queue would hold one entry per worker anyway, and a scan of a
    /// few integers is cheaper than a heap at a million steps.
    dues: Vec<u128>,
    queue: BinaryHeap<Scheduled>,
    order: u64,
    records: Vec<RequestRecord>,
    /// Booked load of each request in flight, by trace index.
    guards: HashMap<u64, LoadGuard>,
    /// Arrivals waiting for the concurrency cap.
    held_back: VecDeque<usize>,
    in_flight: usize,
    preemptions: u64,
    /// The instant that stands for virtual time 0, for the router's clock.
    epoch: Instant,
    finished: usize,
    progress: Option<Box<dyn FnMut(usize, usize) + 'a>>,
    /// The planner and the workers it manages, in a planner replay.
    planner: Option<PlannerState>,
}

impl Simulation<'_> {
    /// The role of the workers of `pool`.
    fn role(&self, pool: usize) -> WorkerRole {
        match (self.disagg.is_some(), pool) {
            (false, _) => WorkerRole::Aggregated,
            (true, 0) => WorkerRole::Prefill,
            (true, _) => WorkerRole::Decode,
        }
    }

    fn schedule(&mut self, at_ms: f64, event: Event) {
        self.order += 1;
        self.queue.push(Scheduled {
            at_ms,
            order: self.order,
            event,
        });
    }

    fn instant(&self, at_ms: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(at_ms.max(0.0) / 1000.0)
    }

    /// The worker whose step ends first (ties: the first scheduled), with when and its order.
    fn next_step(&self) -> Option<(f64, u64, usize)> {
        let (worker, &key) = self.dues.iter().enumerate().min_by_key(|(_, key)| **key)?;
        (key != IDLE).then(|| (self.workers[worker].due_ms, key as u64, worker))
    }

    /// Process `arrivals` (sorted by time) and every event they cause, in time order; an
    /// arrival goes before an event scheduled for the same instant. Arrivals are read in order
    /// and steps from the workers, so the queue holds only deliveries, held-back arrivals and
    /// membership changes.
    fn run(&mut self, arrivals: &[(f64, usize)]) {
        let mut next = arrivals.iter().peekable();
        loop {
            let step = self.next_step();
            let queued = self
                .queue
                .peek()
                .map(|scheduled| (scheduled.at_ms, scheduled.order));
            let scheduled_first = match (step, queued) {
                (Some((at, order, _)), Some(queued)) => {
                    Some(at.total_cmp(&queued.0).then(order.cmp(&queued.1)).is_gt())
                }
                (Some(_), None) => Some(false),
                (None, Some(_)) => Some(true),
                (None, None) => None,
            };
            let earliest = match scheduled_first {
                Some(true) => queued.map(|(at, _)| at),
                Some(false) => step.map(|(at, ..)| at),
                None => None,
            };
            if let Some(&&(at_ms, index)) = next.peek()
                && earliest.is_none_or(|earliest| at_ms <= earliest)
            {
                next.next();
                self.arrive(index, at_ms);
                continue;
            }
            if let (Some(false), Some((at_ms, _, worker))) = (scheduled_first, step) {
                self.dues[worker] = IDLE;
                self.step_done(worker, at_ms);
                continue;
            }
            let Some(Scheduled { at_ms, event, .. }) = self.queue.pop() else {
                break;
            };
            match event {
                Event::Arrival(index) => self.arrive(index, at_ms),
                Event::Deliver(worker) => self.deliver(worker),
                Event::Membership(i) => self.change_membership(i),
                Event::Wake(worker) => {
                    if self.dues[worker] == IDLE {
                        self.start_step(worker, at_ms);
                    }
                }
                Event::Handoff(index) => self.hand_over(index, at_ms),
                Event::Plan => self.plan(at_ms),
                Event::Ready(worker) => self.worker_ready(worker, at_ms),
                Event::Share => self.deliver_shared(at_ms),
            }
        }
    }

    fn arrive(&mut self, index: usize, now_ms: f64) {
        if self.records[index].arrival_ms.is_nan() {
            self.records[index].arrival_ms = now_ms;
        }
        if self
            .config
            .max_in_flight
            .is_some_and(|cap| self.in_flight >= cap)
        {
            self.held_back.push_back(index);
            return;
        }
        // Without busy thresholds every arrival is placed; one that is not stays unfinished
        // in the records.
        let trace = &self.trace[index];
        // The block sizes were checked before the replay started, so this cannot fail.
        let blocks = engine_blocks(
            trace,
            self.config.trace_block_size,
            self.config.engine.block_size,
        )
        .unwrap_or_default();
        let route = route(trace, &blocks);
        let request = SimRequest {
            id: index as u64,
            prompt_blocks: blocks,
            prompt_tokens: trace.input_length.max(1),
            output_tokens: trace.output_length.max(1),
        };
        if self.disagg.is_some() {
            self.arrive_disaggregated(index, &route, request, now_ms);
            return;
        }
        let now = self.instant(now_ms);
        let Some(routed) = self.pools[0].select_next(&route, now) else {
            return;
        };
        if self.dispatch(index, routed, request, false, now_ms) {
            self.in_flight += 1;
        }
        self.share(now_ms);
    }

    /// Start `request` (trace entry `index`) on the worker `routed` chose, its load booked;
    /// `transferred` when its prompt's KV was computed elsewhere. `false` if the worker is not
    /// one of the replay's.
    fn dispatch(
        &mut self,
        index: usize,
        routed: Routed,
        request: SimRequest,
        transferred: bool,
        now_ms: f64,
    ) -> bool {
        // The selectors route only to workers of the replay.
        let Some(&worker) = self.slots.get(&routed.worker) else {
            return false;
        };
        self.guards.insert(index as u64, routed.guard);
        self.records[index].worker = routed.worker.worker;
        self.add_request(worker, request, transferred, now_ms);
        true
    }

    /// Queue `request` on `worker` (a slot) at `now_ms`, which starts stepping if it was idle.
    fn add_request(&mut self, worker: usize, request: SimRequest, transferred: bool, now_ms: f64) {
        self.cut_run(worker, now_ms);
        let pulled = self.pulled_blocks(request.id).filter(|_| !transferred);
        let engine = &mut self.workers[worker].engine;
        if let Some(pulled) = pulled {
            engine.add_request_with_prefix(request, pulled);
        } else if transferred {
            let kv = self
                .config
                .disagg
                .map(|d| d.handed_over_kv)
                .unwrap_or_default();
            engine.add_transferred_request(request, kv);
        } else {
            engine.add_request(request);
        }
        if self.dues[worker] == IDLE {
            self.start_step(worker, now_ms);
        }
    }

    /// Apply `config.membership[i]`, which [`Replay::run`] found possible.
    fn change_membership(&mut self, i: usize) {
        let at_ms = self.config.membership[i].at_ms;
        match self.config.membership[i].change {
            Change::Insert(id, ()) => {
                let events = self.pools[0].index.is_some();
                self.slots.insert(id, self.workers.len());
                let mut worker = new_worker(id, 0, &self.config, events);
                worker.asked_ms = at_ms;
                self.workers.push(worker);
                self.dues.push(IDLE);
                self.pools[0].selector.insert_worker(id);
                for selector in self.pools[0].other_selectors() {
                    selector.insert_worker(id);
                }
            }
            Change::Remove(id) => {
                self.pools[0].selector.remove_worker(id);
                for selector in self.pools[0].other_selectors() {
                    selector.remove_worker(id);
                }
                if let Some(&slot) = self.slots.get(&id) {
                    self.workers[slot].removed_ms = Some(at_ms);
                }
            }
        }
    }

    fn start_step(&mut self, worker: usize, now_ms: f64) {
        let state = &mut self.workers[worker];
        state.run_ends.clear();
        state.engine.set_time(now_ms);
        if !state.engine.step_into(&mut state.report) {
            if let Some(wake_ms) = state.engine.next_wake_ms() {
                self.schedule(wake_ms.max(now_ms), Event::Wake(worker));
            }
            return;
        }
        let mut end = now_ms + state.report.duration_ms;
        if state.report.is_uneventful() && !state.engine.has_cache_hits() {
            while let Some(duration_ms) = state.engine.run_quiet_step() {
                if state.run_ends.is_empty() {
                    state.run_ends.push(end);
                }
                end += duration_ms;
                state.run_ends.push(end);
            }
        }
        self.order += 1;
        state.due_ms = end;
        self.dues[worker] = due_key(end, self.order);
    }

    /// A request joins `worker` at `now_ms`: the steps of its run that would start after the
    /// one in progress do not happen.
    fn cut_run(&mut self, worker: usize, now_ms: f64) {
        let state = &mut self.workers[worker];
        let Some(last) = state.run_ends.len().checked_sub(1) else {
            return;
        };
        // The step in progress is the first that ends at or after `now_ms` (an arrival goes
        // before a step that ends at the same instant).
        let in_progress = state
            .run_ends
            .partition_point(|&end| end < now_ms)
            .min(last);
        state.engine.undo_quiet_steps((last - in_progress) as u64);
        state.run_ends.truncate(in_progress + 1);
        state.due_ms = state.run_ends[in_progress];
        let order = self.dues[worker] as u64;
        self.dues[worker] = due_key(state.due_ms, order);
    }

    fn step_done(&mut self, worker: usize, now_ms: f64) {
        // Most steps only decode: nothing to record, nothing to publish.
        let state = &self.workers[worker];
        if state.report.is_uneventful() && !state.engine.has_cache_hits() {
            self.start_step(worker, now_ms);
            return;
        }
        let mut report = std::mem::take(&mut self.workers[worker].report);
        for (id, cached) in self.workers[worker].engine.drain_cache_hits() {
            if let Some(record) = self.record_mut(id) {
                record.cached_tokens = cached;
            }
        }
        for hit in self.workers[worker].engine.drain_lower_tier_hits() {
            if let Some(record) = self.record_mut(hit.id) {
                record.host_cached_tokens = hit.host_tokens;
                record.disk_cached_tokens = hit.disk_tokens;
            }
        }
        // A prefill worker's first tokens are nobody's; its requests go on elsewhere.
        let prefill = self.role(self.workers[worker].pool) == WorkerRole::Prefill;
        for &id in &report.first_tokens {
            if let Some(guard) = self.guards.get_mut(&id) {
                guard.first_token();
            }
            if prefill && self.in_prefill_phase(id) {
                self.prefilled(id);
            } else if let Some(record) = self.record_mut(id) {
                record.first_token_ms = Some(now_ms);
            }
        }
        self.preemptions += report.preempted.len() as u64;
        for &id in &report.finished {
            self.guards.remove(&id);
            if prefill && self.prefill_finished(id, now_ms) {
                continue;
            }
            if let Some(record) = self.record_mut(id) {
                record.finish_ms = Some(now_ms);
            }
            self.in_flight -= 1;
            self.finished += 1;
            let total = self.trace.len();
            if let Some(progress) = &mut self.progress
                && (self.finished.is_multiple_of((total / 100).max(1)) || self.finished == total)
            {
                progress(self.finished, total);
            }
            if let Some(next) = self.held_back.pop_front() {
                self.schedule(now_ms, Event::Arrival(next));
            }
        }
        self.publish(worker, &mut report, now_ms);
        self.share(now_ms);
        self.workers[worker].report = report;
        self.start_step(worker, now_ms);
    }

    /// Send the step's KV events towards the index, now or after the lag.
    fn publish(&mut self, worker: usize, report: &mut StepReport, now_ms: f64) {
        let pool = self.workers[worker].pool;
        if self.pools[pool].index.is_none()
            || (report.events.is_empty() && report.tier_events.is_empty())
        {
            return;
        }
        let state = &mut self.workers[worker];
        let device = report
            .events
            .drain(..)
            .map(|data| (StorageTier::Device, data));
        let events: Vec<KvEvent> = device
            .chain(report.tier_events.drain(..))
            .map(|(tier, data)| {
                let event = KvEvent {
                    worker: state.id,
                    event_id: state.next_event_id,
                    tier,
                    data,
                };
                state.next_event_id += 1;
                event
            })
            .collect();
        state.in_transit.push_back(events);
        if self.config.event_lag_ms > 0.0 {
            self.schedule(now_ms + self.config.event_lag_ms, Event::Deliver(worker));
        } else {
            self.deliver(worker);
        }
    }

    fn deliver(&mut self, worker: usize) {
        let Some(events) = self.workers[worker].in_transit.pop_front() else {
            return;
        };
        if let Some(index) = &self.pools[self.workers[worker].pool].index {
            // The simulated engine emits consistent events; a rejection here would be a bug in
            // the simulator, and the index stays consistent regardless.
            let _ = index.apply_batch(&events);
        }
    }

    fn record_mut(&mut self, id: u64) -> Option<&mut RequestRecord> {
        self.records.get_mut(id as usize)
    }
}
