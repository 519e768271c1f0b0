//! The hand-over of a disaggregated replay: the placement of each arrival, the end of a
//! prefill, and the prompt's KV on its way to the decode worker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dynamo_router::disagg::{
    BookedWorker, Candidates, Placement, PlacementContext, PlacementPolicy, Unbooked, draw,
};
use dynamo_router::{RouteRequest, Routed};

use super::{Event, Simulation, route};
use crate::engine::SimRequest;
use crate::replay::{DisaggConfig, TransferConfig};

/// The prefill pool is `Simulation::pools[PREFILL]`, the decode pool `pools[DECODE]`.
const PREFILL: usize = 0;
const DECODE: usize = 1;

/// What a disaggregated replay keeps beside the workers.
pub(super) struct Disagg {
    transfer: TransferConfig,
    placement: Box<dyn PlacementPolicy>,
    /// Set while the decode pool's router places a handed-over request.
    handing_over: Arc<AtomicBool>,
    /// The whole request of each one a prefill worker has, by trace index, for its decode.
    prefilling: HashMap<u64, SimRequest>,
    /// Those whose prompt the prefill worker has finished (the others it could not serve).
    prefilled: HashSet<u64>,
    /// Requests whose KV is on its way, with their booked decode worker.
    in_transfer: HashMap<u64, (Routed, SimRequest)>,
    /// The prefix blocks the worker computing each request's prompt pulled from another
    /// ([`PlacementPolicy::pulls_prefix`]), by trace index.
    pulled: HashMap<u64, u32>,
}

impl Disagg {
    pub(super) fn new(
        config: DisaggConfig,
        placement: Box<dyn PlacementPolicy>,
        handing_over: Arc<AtomicBool>,
    ) -> Self {
        Disagg {
            transfer: config.transfer,
            placement,
            handing_over,
            prefilling: HashMap::new(),
            prefilled: HashSet::new(),
            in_transfer: HashMap::new(),
            pulled: HashMap::new(),
        }
    }
}

impl Simulation<'_> {
    /// Place and start an arrival: a decode worker is chosen first, then a prefill worker,
    /// and the placement policy decides whether the prompt goes to the prefill worker (whose
    /// booking is kept, the decode worker's dropped: the decode worker is chosen again when the
    /// prefill ends) or stays on the decode worker.
    pub(super) fn arrive_disaggregated(
        &mut self,
        index: usize,
        route: &RouteRequest,
        request: SimRequest,
        now_ms: f64,
    ) {
        let now = self.instant(now_ms);
        let Ok(decode) = self.pools[DECODE].selector.select(route, now) else {
            return;
        };
        let prefill = self.pools[PREFILL].selector.select(route, now).ok();
        let placement = match (&self.disagg, &prefill) {
            (Some(disagg), Some(prefill)) => disagg
                .placement
                .place(&self.context(index, route, &decode, prefill)),
            _ => Placement::Local,
        };
        let started = match (placement, prefill) {
            (Placement::Remote, Some(prefill)) => {
                drop(decode);
                self.records[index].prefill_worker = Some(prefill.worker.worker);
                self.pull_prefix(index, route, &prefill);
                let prompt_only = SimRequest {
                    output_tokens: 1,
                    ..request.clone()
                };
                if let Some(disagg) = &mut self.disagg {
                    disagg.prefilling.insert(index as u64, request);
                }
                self.dispatch(index, prefill, prompt_only, false, now_ms)
            }
            (Placement::PrefillWorker, Some(prefill)) => {
                drop(decode);
                self.dispatch(index, prefill, request, false, now_ms)
            }
            _ => {
                self.pull_prefix(index, route, &decode);
                self.dispatch(index, decode, request, false, now_ms)
            }
        };
        if started {
            self.in_flight += 1;
        }
    }

    /// With a placement that pulls prefixes, have `worker`, about to compute trace request
    /// `index`'s prompt, pull the longest prefix of it that any worker of either pool caches,
    /// if that is longer than its own.
    fn pull_prefix(&mut self, index: usize, route: &RouteRequest, worker: &Routed) {
        let Some(disagg) = &self.disagg else {
            return;
        };
        if !disagg.placement.pulls_prefix() {
            return;
        }
        let deepest = self
            .pools
            .iter()
            .filter_map(|pool| pool.index.as_ref())
            .map(|index| index.overlaps(&route.blocks).max_depth())
            .max()
            .unwrap_or(0);
        if deepest > worker.cached.total().max(worker.in_flight)
            && let Some(disagg) = &mut self.disagg
        {
            disagg.pulled.insert(index as u64, deepest);
        }
    }

    /// What the placement policy sees of trace request `index` and the two booked workers.
    fn context(
        &self,
        index: usize,
        route: &RouteRequest,
        decode: &Routed,
        prefill: &Routed,
    ) -> PlacementContext {
        let block_size = self.config.engine.block_size;
        let booked = |pool: usize, routed: &Routed| BookedWorker {
            cached_blocks: routed.cached.total(),
            load: self.pools[pool].selector.load().load(routed.worker),
        };
        let (decode_booked, prefill_booked) = (booked(DECODE, decode), booked(PREFILL, prefill));
        let prompt_blocks = route.blocks.len() as u32;
        let unbooked = |routed: &Routed, booked: &BookedWorker| {
            let seen = Unbooked {
                cached: routed.cached,
                in_flight: routed.in_flight,
                booked: booked.load,
            };
            seen.state(
                routed.worker,
                route.prompt_tokens,
                prompt_blocks,
                block_size,
            )
        };
        let sizes = [PREFILL, DECODE].map(|pool| self.pools[pool].selector.workers().len());
        let candidates = Candidates {
            decode: unbooked(decode, &decode_booked),
            prefill: unbooked(prefill, &prefill_booked),
            prompt_blocks,
            prefill_share: sizes[0] as f64 / (sizes[0] + sizes[1]).max(1) as f64,
            draw: draw(index as u64),
        };
        PlacementContext::from_booked(
            route.prompt_tokens,
            block_size,
            decode_booked,
            Some(prefill_booked),
        )
        .with_candidates(candidates)
    }

    /// Whether request `id` is in its prefill phase on a prefill worker (rather than served
    /// whole there): its first token is nobody's, and it goes on to a decode worker.
    pub(super) fn in_prefill_phase(&self, id: u64) -> bool {
        self.disagg
            .as_ref()
            .is_some_and(|disagg| disagg.prefilling.contains_key(&id))
    }

    /// The prefix blocks the worker computing request `id`'s prompt pulled from another, if
    /// any. A prefill worker's pull is kept until the hand-over, which it lengthens; a
    /// decode worker's costs no time (the replay charges only the hand-over's link).
    pub(super) fn pulled_blocks(&mut self, id: u64) -> Option<usize> {
        let disagg = self.disagg.as_mut()?;
        let blocks = if disagg.prefilling.contains_key(&id) {
            disagg.pulled.get(&id).copied()
        } else {
            disagg.pulled.remove(&id)
        };
        blocks.map(|blocks| blocks as usize)
    }

    /// A prefill worker sampled the (unseen) token of request `id`: its prompt is computed.
    pub(super) fn prefilled(&mut self, id: u64) {
        if let Some(disagg) = &mut self.disagg {
            disagg.prefilled.insert(id);
        }
    }

    /// A prefill worker is done with request `id`: choose and book its decode worker, and send
    /// the prompt's KV there. `false` if the request goes no further (the prefill worker
    /// could not serve it, or no decode worker takes it): it ends here.
    pub(super) fn prefill_finished(&mut self, id: u64, now_ms: f64) -> bool {
        let now = self.instant(now_ms);
        let block_size = self.config.engine.block_size;
        let Some(disagg) = &mut self.disagg else {
            return false;
        };
        let Some(request) = disagg.prefilling.remove(&id) else {
            return false;
        };
        if !disagg.prefilled.remove(&id) {
            return false;
        }
        let mut transfer_ms = disagg.transfer.time_ms(request.prompt_tokens, block_size);
        if let Some(pulled) = disagg.pulled.remove(&id) {
            // The pulled prefix's time on the link, added to the hand-over's: the prefill
            // worker's steps are not delayed by it.
            let tokens = u64::from(pulled) * u64::from(block_size.get());
            transfer_ms += disagg.transfer.time_ms(tokens, block_size);
        }
        let handing_over = disagg.handing_over.clone();
        let index = id as usize;
        let route = route(&self.trace[index], &request.prompt_blocks);
        handing_over.store(true, Ordering::Relaxed);
        let decode = self.pools[DECODE].selector.select(&route, now);
        handing_over.store(false, Ordering::Relaxed);
        let Ok(decode) = decode else {
            return false;
        };
        self.records[index].prefill_done_ms = Some(now_ms);
        if let Some(disagg) = &mut self.disagg {
            disagg.in_transfer.insert(id, (decode, request));
        }
        self.schedule(now_ms + transfer_ms, Event::Handoff(index));
        true
    }

    /// The KV of trace request `index` reaches its decode worker, which starts decoding.
    pub(super) fn hand_over(&mut self, index: usize, now_ms: f64) {
        let Some(disagg) = &mut self.disagg else {
            return;
        };
        let Some((decode, request)) = disagg.in_transfer.remove(&(index as u64)) else {
            return;
        };
        self.records[index].kv_arrival_ms = Some(now_ms);
        self.dispatch(index, decode, request, true, now_ms);
    }
}
