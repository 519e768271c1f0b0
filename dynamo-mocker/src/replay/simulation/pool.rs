//! A pool of workers and its router: one selector, or in an aggregated replay several router
//! replicas, each arrival going to one replica's selector and the replicas' messages reaching
//! the others after the configured delay.

use std::collections::VecDeque;
use std::sync::Arc;

use dynamo_core::{ReplicaId, ReplicaMessage};
use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
use dynamo_router::{
    ApproxIndex, OverlapSource, RouteRequest, Routed, Router, SelectorConfig, WorkerSelector,
};

use dynamo_router::SharedIndex;

use super::Simulation;
use super::events::Event;
use super::setup::NoKnowledge;
use crate::replay::{CacheKnowledge, ReplayConfig, RouterReplicas};

/// The replicas of the aggregated pool's router.
pub(super) struct Replicas {
    /// Every replica's selector; the pool's own is the first.
    selectors: Vec<WorkerSelector>,
    /// Every replica's shared state, when they share.
    states: Vec<ReplicaState>,
    delay_ms: f64,
    /// The replica the next arrival goes to.
    next: usize,
    /// Messages on their way, with when they arrive, in the order they were sent (the delay
    /// is the same for all, so they also arrive in that order).
    in_transit: VecDeque<(f64, ReplicaMessage)>,
}

/// A pool of workers and its router.
pub(super) struct Pool {
    /// The router's selector (the first replica's, when there are several).
    pub(super) selector: WorkerSelector,
    /// The index the pool's workers' KV events feed, if its router reads them.
    pub(super) index: Option<SharedIndex>,
    /// The router's replicas, when there are several (the aggregated pool only).
    replicas: Option<Replicas>,
}

impl Pool {
    /// A pool routed by one router.
    pub(super) fn new(
        config: &ReplayConfig,
        policy: impl Router,
        knowledge: CacheKnowledge,
    ) -> Pool {
        Pool::replicated(config, policy, knowledge, RouterReplicas::default())
    }

    /// A pool routed by `replicas.count` replicas.
    pub(super) fn replicated(
        config: &ReplayConfig,
        policy: impl Router,
        knowledge: CacheKnowledge,
        replicas: RouterReplicas,
    ) -> Pool {
        let settings = SelectorConfig::new(config.engine.block_size);
        let count = replicas.count.max(1);
        let policy = Arc::new(policy);
        let states: Vec<ReplicaState> = (0..count)
            .filter(|_| replicas.share && count > 1)
            .map(|i| ReplicaState::new(ReplicaConfig::new(ReplicaId(i as u64))))
            .collect();
        let index = match &knowledge {
            CacheKnowledge::Events(index) => Some(index.clone()),
            _ => None,
        };
        let selectors = (0..count)
            .map(|i| {
                let source: Box<dyn OverlapSource> = match &knowledge {
                    CacheKnowledge::Events(index) => Box::new(index.clone()),
                    CacheKnowledge::Approximate(approx) => {
                        let index = ApproxIndex::new(config.engine.block_size, *approx);
                        match states.get(i) {
                            Some(state) => Box::new(state.predictions(index)),
                            None => Box::new(index),
                        }
                    }
                    CacheKnowledge::Other(source) => Box::new(source.clone()),
                    CacheKnowledge::Nothing => Box::new(NoKnowledge),
                };
                let load = states.get(i).map(ReplicaState::load).unwrap_or_default();
                WorkerSelector::with_load(settings, policy.clone(), source, load)
            })
            .collect::<Vec<_>>();
        Pool {
            selector: selectors[0].clone(),
            index,
            replicas: (count > 1).then(|| Replicas {
                selectors,
                states,
                delay_ms: replicas.delay_ms.max(0.0),
                next: 0,
                in_transit: VecDeque::new(),
            }),
        }
    }

    /// Route `route` with the next replica's selector (round-robin over the arrivals).
    pub(super) fn select_next(
        &mut self,
        route: &RouteRequest,
        now: std::time::Instant,
    ) -> Option<Routed> {
        let selector = match &mut self.replicas {
            Some(replicas) => {
                let at = replicas.next;
                replicas.next = (at + 1) % replicas.selectors.len();
                &replicas.selectors[at]
            }
            None => &self.selector,
        };
        selector.select(route, now).ok()
    }

    /// Every replica's selector but the pool's own: membership changes apply to them too.
    pub(super) fn other_selectors(&self) -> &[WorkerSelector] {
        self.replicas
            .as_ref()
            .map_or(&[], |replicas| &replicas.selectors[1..])
    }
}

impl Simulation<'_> {
    /// Send what the replicas published since the last call: delivered now without a delay,
    /// else scheduled.
    pub(super) fn share(&mut self, now_ms: f64) {
        let Some(replicas) = &mut self.pools[0].replicas else {
            return;
        };
        let arrive_ms = now_ms + replicas.delay_ms;
        let before = replicas.in_transit.len();
        for state in &replicas.states {
            while let Some(message) = state.try_next_message() {
                replicas.in_transit.push_back((arrive_ms, message));
            }
        }
        if replicas.in_transit.len() == before {
            return;
        }
        if replicas.delay_ms > 0.0 {
            self.schedule(arrive_ms, Event::Share);
        } else {
            self.deliver_shared(now_ms);
        }
    }

    /// Apply the messages due by `now_ms` on every replica but their sender.
    pub(super) fn deliver_shared(&mut self, now_ms: f64) {
        let now = self.instant(now_ms);
        let Some(replicas) = &mut self.pools[0].replicas else {
            return;
        };
        while let Some((at_ms, _)) = replicas.in_transit.front() {
            if *at_ms > now_ms {
                break;
            }
            let Some((_, message)) = replicas.in_transit.pop_front() else {
                break;
            };
            for state in &replicas.states {
                state.apply(&message, now);
            }
        }
    }
}
