//! Whether the last interval showed a pool short of workers, and by how much.

use dynamo_core::WorkerRole;

use crate::observe::Observation;
use crate::policy::pool::PoolLoad;

/// The most each figure of the last interval may show before a pool counts as short of
/// workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Limits {
    /// Waiting requests per prefilling (prefill, aggregated) worker.
    pub(super) prefill_queue: f64,
    /// Waiting requests per decode worker.
    pub(super) decode_queue: f64,
    /// Mean TTFT, in ms.
    pub(super) ttft_ms: f64,
    /// What one unloaded worker shows as TTFT, in ms.
    pub(super) unloaded_ttft_ms: f64,
    /// Mean ITL, in ms.
    pub(super) itl_ms: f64,
    /// What one unloaded worker shows as ITL, in ms.
    pub(super) unloaded_itl_ms: f64,
    /// Mean KV usage.
    pub(super) kv_usage: f64,
    /// The share of the room between unloaded and limit a mean latency may take before the
    /// pool counts as short of workers.
    pub(super) grow_share: f64,
    /// The share of that room a calm pool's mean latencies stay within.
    pub(super) calm_share: f64,
}

/// How many times a queue's mean wait grows when a pool of `serving` workers at
/// `utilisation` loses one worker, by Kingman's `ρ / (1 − ρ)` (infinite when the rest would
/// be saturated); `None` when the pool cannot lose a worker or its load is unknown.
fn fewer_worker_growth(utilisation: Option<f64>, serving: usize) -> Option<f64> {
    let rho = utilisation.filter(|r| r.is_finite() && *r > 0.0)?;
    if serving < 2 {
        return None;
    }
    let after = rho * serving as f64 / (serving - 1) as f64;
    let wait = |r: f64| r / (1.0 - r);
    Some(if after < 1.0 {
        wait(after) / wait(rho)
    } else {
        f64::INFINITY
    })
}

/// The figures of one pool that passed their limits, each as figure over limit.
#[derive(Debug, Clone, Default)]
pub(super) struct Pressure {
    /// `(what, figure, limit)` for each figure past its limit.
    over: Vec<(&'static str, f64, f64)>,
    /// `(what, figure, calm limit)` for each figure past its calm limit: the pool may not
    /// shrink.
    unsettled: Vec<(&'static str, f64, f64)>,
    /// Workers that reported, when any did.
    ready: Option<usize>,
    /// Workers asked for that have not joined yet (0 when no worker reported at all).
    pending: usize,
    /// Requests waiting, all the pool's workers together.
    queue: u64,
}

impl Pressure {
    /// The pressure on the `role` pool of `current` workers in `observed`, whose load would
    /// keep `busy` workers busy at their profiled capacity (when known).
    pub(super) fn of(
        role: WorkerRole,
        current: usize,
        observed: &Observation,
        limits: &Limits,
        busy: Option<f64>,
    ) -> Self {
        let load = PoolLoad::of(observed, role);
        let ready = (!observed.workers.is_empty()).then_some(load.workers);
        let pending = ready.map_or(0, |ready| current.saturating_sub(ready));
        let prefills = role != WorkerRole::Decode;
        let decodes = role != WorkerRole::Prefill;
        let queue = if prefills {
            limits.prefill_queue
        } else {
            limits.decode_queue
        };
        // (what, figure, grow past, calm below).
        let mut candidates = vec![(
            "waiting requests per worker",
            load.mean_waiting(),
            queue,
            queue / 2.0,
        )];
        let room = |limit: f64, floor: f64, share: f64| {
            let floor = floor.min(limit);
            floor + share * (limit - floor)
        };
        let serving = ready.unwrap_or(current);
        let utilisation = busy.map(|busy| busy / serving.max(1) as f64);
        let latency = |limit: f64, floor: f64| {
            let grow = room(limit, floor, limits.grow_share);
            let calm = match fewer_worker_growth(utilisation, serving) {
                Some(growth) => floor.min(grow) + (grow - floor).max(0.0) / growth,
                None => room(limit, floor, limits.calm_share),
            };
            (grow, calm)
        };
        if prefills && let Some(ttft) = observed.mean_ttft_ms {
            let (grow, calm) = latency(limits.ttft_ms, limits.unloaded_ttft_ms);
            candidates.push(("mean TTFT (ms)", ttft, grow, calm));
        }
        if decodes {
            if let Some(itl) = observed.mean_itl_ms {
                let (grow, calm) = latency(limits.itl_ms, limits.unloaded_itl_ms);
                candidates.push(("mean ITL (ms)", itl, grow, calm));
            }
            let kv = limits.kv_usage;
            candidates.push(("mean KV usage", load.mean_kv, kv, kv));
        }
        let mut over = Vec::new();
        let mut unsettled = Vec::new();
        for (what, figure, grow, calm) in candidates {
            if !figure.is_finite() {
                continue;
            }
            if figure > grow {
                over.push((what, figure, grow));
            } else if figure > calm {
                unsettled.push((what, figure, calm));
            }
        }
        Pressure {
            over,
            unsettled,
            ready,
            pending,
            queue: load.waiting,
        }
    }

    /// Requests waiting in the pool, all workers together.
    pub(super) fn queue(&self) -> u64 {
        self.queue
    }

    /// Whether every figure stayed within its calm limit, so the pool may shrink.
    pub(super) fn is_calm(&self) -> bool {
        self.over.is_empty() && self.unsettled.is_empty()
    }

    /// The figures past their calm limits, in words.
    pub(super) fn describe_unsettled(&self) -> String {
        let parts: Vec<String> = self
            .unsettled
            .iter()
            .map(|(what, figure, calm)| format!("{what} {figure:.2} above the calm {calm:.2}"))
            .collect();
        parts.join(", ")
    }

    /// Workers to add now to a pool of `current`, if it is under pressure. The workers that
    /// serve (those that reported, or `current` when none did) grow by the square root of the
    /// worst ratio of figure to limit — latencies and queues grow faster than the load near
    /// saturation, so the ratio itself overstates the shortfall — at least one worker, at
    /// most `max_growth` times; what is still starting from an earlier step counts towards
    /// that growth.
    pub(super) fn step(&self, current: usize, max_growth: f64) -> Option<usize> {
        let worst = self
            .over
            .iter()
            .map(|&(_, figure, limit)| figure / limit)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            })?;
        let serving = self.ready.unwrap_or(current).max(1);
        let n = serving as f64;
        let wanted = (n * (worst.sqrt() - 1.0)).ceil();
        let most = (n * (max_growth - 1.0)).floor().max(1.0);
        let target = serving + wanted.clamp(1.0, most) as usize;
        Some(target.saturating_sub(current))
    }

    /// The figures past their limits, in words.
    pub(super) fn describe(&self) -> String {
        let parts: Vec<String> = self
            .over
            .iter()
            .map(|(what, figure, limit)| format!("{what} {figure:.2} over {limit:.2}"))
            .collect();
        match self.pending {
            0 => parts.join(", "),
            n => format!("{} ({n} worker(s) still starting)", parts.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fewer_worker_growth;

    #[test]
    fn one_worker_fewer_lengthens_the_wait_more_the_smaller_the_pool() {
        let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-9);
        // 5 workers at 40% would run at 50%: ρ / (1 − ρ) goes from 2/3 to 1.
        assert!(close(fewer_worker_growth(Some(0.4), 5), 1.5));
        // 2 at 40% would run at 80%: from 2/3 to 4.
        assert!(close(fewer_worker_growth(Some(0.4), 2), 6.0));
        // At a light load the wait grows as the load per worker: n / (n − 1).
        let light = fewer_worker_growth(Some(1e-6), 8).unwrap_or(0.0);
        assert!((light - 8.0 / 7.0).abs() < 1e-5, "{light}");
        // 2 at 50% would saturate the one left.
        assert_eq!(fewer_worker_growth(Some(0.5), 2), Some(f64::INFINITY));
        // No worker to lose, or no load known.
        assert_eq!(fewer_worker_growth(Some(0.4), 1), None);
        assert_eq!(fewer_worker_growth(None, 5), None);
        assert_eq!(fewer_worker_growth(Some(0.0), 5), None);
    }
}
