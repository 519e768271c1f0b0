//! The pools of a deployment, one at a time.

use dynamo_core::WorkerRole;

use crate::observe::{Observation, WorkerLoad};
use crate::plan::Replicas;

/// What the workers of one pool reported at the end of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PoolLoad {
    /// Workers that reported.
    pub(crate) workers: usize,
    /// Requests waiting, all workers together.
    pub(crate) waiting: u64,
    /// Requests running, all workers together.
    pub(crate) running: u64,
    /// Mean KV usage.
    pub(crate) mean_kv: f64,
    /// Highest waiting of one worker.
    pub(crate) max_waiting: u64,
    /// Highest KV usage of one worker.
    pub(crate) max_kv: f64,
}

impl PoolLoad {
    /// The workers of `role` in `observed`; every worker for the aggregated pool, since an
    /// aggregated deployment has only one.
    pub(crate) fn of(observed: &Observation, role: WorkerRole) -> Self {
        let members = observed
            .workers
            .iter()
            .filter(|w| role == WorkerRole::Aggregated || w.role == role);
        let mut load = PoolLoad::default();
        let mut kv_sum = 0.0;
        for w in members {
            let WorkerLoad {
                waiting,
                running,
                kv_usage,
                ..
            } = *w;
            let kv = if kv_usage.is_finite() { kv_usage } else { 0.0 };
            load.workers += 1;
            load.waiting += waiting;
            load.running += running;
            load.max_waiting = load.max_waiting.max(waiting);
            load.max_kv = load.max_kv.max(kv);
            kv_sum += kv;
        }
        if load.workers > 0 {
            load.mean_kv = kv_sum / load.workers as f64;
        }
        load
    }

    /// Mean waiting requests per worker (0 without workers).
    pub(crate) fn mean_waiting(&self) -> f64 {
        if self.workers == 0 {
            0.0
        } else {
            self.waiting as f64 / self.workers as f64
        }
    }

    /// Mean running requests per worker (0 without workers).
    pub(crate) fn mean_running(&self) -> f64 {
        if self.workers == 0 {
            0.0
        } else {
            self.running as f64 / self.workers as f64
        }
    }
}

/// Replicas shaped like `current`, each pool's size from `size`.
pub(crate) fn resize(
    current: Replicas,
    mut size: impl FnMut(WorkerRole, usize) -> usize,
) -> Replicas {
    match current {
        Replicas::Aggregated(n) => Replicas::Aggregated(size(WorkerRole::Aggregated, n)),
        Replicas::Disaggregated { prefill, decode } => Replicas::Disaggregated {
            prefill: size(WorkerRole::Prefill, prefill),
            decode: size(WorkerRole::Decode, decode),
        },
    }
}

/// The index of a pool in a per-pool array.
pub(crate) fn slot(role: WorkerRole) -> usize {
    match role {
        WorkerRole::Aggregated => 0,
        WorkerRole::Prefill => 1,
        WorkerRole::Decode => 2,
    }
}

/// Whole workers for a fractional need: the ceiling, 0 for nothing or nonsense.
pub(crate) fn whole(workers: f64) -> usize {
    if workers.is_finite() && workers > 0.0 {
        // Guard against 2.0000000001 from rounding becoming 3.
        (workers - 1e-9).ceil().max(0.0) as usize
    } else {
        0
    }
}
