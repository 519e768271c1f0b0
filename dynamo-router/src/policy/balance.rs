//! Cache-blind policies: round-robin, random, power of two choices, least loaded.
//!
//! "Load" here compares active requests first, then prefill tokens, then decode blocks.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::choose::{SharedRng, lowest_cost};
use super::{Decision, RouteContext, Router, WorkerState};

fn load_key(worker: &WorkerState) -> (u32, u64, u64) {
    let load = &worker.load;
    (
        load.active_requests,
        load.active_prefill_tokens,
        load.active_decode_blocks,
    )
}

/// Each eligible worker in turn.
///
/// The cursor advances once per decision over the list of eligible workers (sorted by id), so
/// with a stable set of workers the choices cycle through all of them.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round-robin policy starting at the first worker.
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Router for RoundRobin {
    fn route(&self, _request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        if workers.is_empty() {
            return Decision::Queue;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Decision::Route(workers[turn % workers.len()].worker)
    }

    fn reads_overlaps(&self) -> bool {
        false
    }
}

/// A worker chosen uniformly at random.
#[derive(Debug)]
pub struct Random {
    rng: SharedRng,
}

impl Random {
    /// A random policy, seeded for reproducible choices or (`None`) from the OS.
    pub fn new(seed: Option<u64>) -> Self {
        Random {
            rng: SharedRng::new(seed),
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new(None)
    }
}

impl Router for Random {
    fn route(&self, _request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        if workers.is_empty() {
            return Decision::Queue;
        }
        let i = self.rng.with(|rng| rng.random_range(0..workers.len()));
        Decision::Route(workers[i].worker)
    }

    fn reads_overlaps(&self) -> bool {
        false
    }
}

/// Two distinct workers drawn at random; the less loaded one wins.
///
/// Nearly as balanced as least-loaded, without every router instance chasing the same
/// least-loaded worker when their views of the load lag.
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    rng: SharedRng,
}

impl PowerOfTwoChoices {
    /// A power-of-two-choices policy, seeded or (`None`) from the OS.
    pub fn new(seed: Option<u64>) -> Self {
        PowerOfTwoChoices {
            rng: SharedRng::new(seed),
        }
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        PowerOfTwoChoices::new(None)
    }
}

impl Router for PowerOfTwoChoices {
    fn route(&self, _request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        let n = workers.len();
        if n < 2 {
            return workers
                .first()
                .map_or(Decision::Queue, |w| Decision::Route(w.worker));
        }
        let (a, b) = self.rng.with(|rng| {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            (a, b)
        });
        let winner = if load_key(&workers[b]) < load_key(&workers[a]) {
            b
        } else {
            a
        };
        Decision::Route(workers[winner].worker)
    }
}

/// The least loaded worker; ties broken at random.
#[derive(Debug)]
pub struct LeastLoaded {
    rng: SharedRng,
}

impl LeastLoaded {
    /// A least-loaded policy whose ties are broken with this seed or (`None`) from the OS.
    pub fn new(seed: Option<u64>) -> Self {
        LeastLoaded {
            rng: SharedRng::new(seed),
        }
    }
}

impl Default for LeastLoaded {
    fn default() -> Self {
        LeastLoaded::new(None)
    }
}

impl Router for LeastLoaded {
    fn route(&self, _request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        let Some(least) = workers.iter().map(load_key).min() else {
            return Decision::Queue;
        };
        // Rank by load; only the least loaded workers tie at cost 0.
        lowest_cost(
            workers,
            |w| if load_key(w) == least { 0.0 } else { 1.0 },
            0.0,
            &self.rng,
        )
    }
}
