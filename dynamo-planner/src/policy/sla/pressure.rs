//! Whether the last interval showed a pool short of workers, and by how much.

use dynamo_core::WorkerRole;

use super::SlaConfig;
use crate::observe::Observation;
use crate::policy::pool::PoolLoad;

/// The figures of one pool that passed their limits, each as figure over limit.
#[derive(Debug, Clone, Default)]
pub(super) struct Pressure {
    /// `(what, figure, limit)` for each figure past its limit.
    over: Vec<(&'static str, f64, f64)>,
}

impl Pressure {
    /// The pressure on the `role` pool in `observed`.
    pub(super) fn of(role: WorkerRole, observed: &Observation, config: &SlaConfig) -> Self {
        let load = PoolLoad::of(observed, role);
        let prefills = role != WorkerRole::Decode;
        let decodes = role != WorkerRole::Prefill;
        let mut candidates = vec![(
            "waiting requests per worker",
            load.mean_waiting(),
            config.queue_per_worker,
        )];
        if prefills && let Some(ttft) = observed.mean_ttft_ms {
            candidates.push(("mean TTFT (ms)", ttft, config.targets.ttft_ms));
        }
        if decodes {
            if let Some(itl) = observed.mean_itl_ms {
                candidates.push(("mean ITL (ms)", itl, config.targets.itl_ms));
            }
            candidates.push(("mean KV usage", load.mean_kv, config.kv_high));
        }
        Pressure {
            over: candidates
                .into_iter()
                .filter(|&(_, figure, limit)| figure.is_finite() && figure > limit)
                .collect(),
        }
    }

    /// Workers to add now to a pool of `current`, if it is under pressure: the worst ratio of
    /// figure to limit says by how much it grows, at least one worker, at most `max_growth`
    /// times its size.
    pub(super) fn step(&self, current: usize, max_growth: f64) -> Option<usize> {
        let worst = self
            .over
            .iter()
            .map(|&(_, figure, limit)| figure / limit)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            })?;
        let n = current.max(1) as f64;
        let wanted = (n * (worst - 1.0)).ceil();
        let most = (n * (max_growth - 1.0)).floor().max(1.0);
        Some(wanted.clamp(1.0, most) as usize)
    }

    /// The figures past their limits, in words.
    pub(super) fn describe(&self) -> String {
        let parts: Vec<String> = self
            .over
            .iter()
            .map(|(what, figure, limit)| format!("{what} {figure:.2} over {limit:.2}"))
            .collect();
        parts.join(", ")
    }
}
