//! The limits every decision respects: workers per pool, and a budget of GPUs in all.

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::plan::Replicas;

/// The limits every decision respects.
///
/// The budget counts GPUs: each worker costs the GPUs its role holds ([`WorkerGpus`], one
/// each by default, so that the budget then counts workers), as NVIDIA Dynamo's planner counts
/// its `max_gpu_budget` with each engine's GPUs.
///
/// ```
/// use dynamo_planner::{Bounds, Replicas, WorkerGpus};
///
/// // Decode workers of four GPUs (tensor parallelism 4), prefill workers of one; 16 GPUs.
/// let bounds = Bounds {
///     budget: 16,
///     gpus: WorkerGpus { decode: 4, ..WorkerGpus::default() },
///     ..Bounds::default()
/// };
/// let wanted = Replicas::Disaggregated { prefill: 6, decode: 4 };
/// assert_eq!(bounds.gpus.of_pools(wanted), 22);
/// // Over the budget the prefill pool shrinks in proportion (6 × 16 / 22: 4 workers) and
/// // the decode pool takes the 12 GPUs it leaves (3 workers).
/// assert_eq!(bounds.apply(wanted), Replicas::Disaggregated { prefill: 4, decode: 3 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Fewest workers per pool. Default 1.
    pub min_per_pool: usize,
    /// Most workers per pool. Default 8.
    pub max_per_pool: usize,
    /// Most GPUs in all pools together, each worker counting [`gpus`](Self::gpus) of its
    /// role. Default 8.
    pub budget: usize,
    /// GPUs one worker of each role holds. One each by default.
    #[serde(default)]
    pub gpus: WorkerGpus,
}

/// How many GPUs one worker of each role holds (its tensor-parallel size, say): what it
/// costs against the [`Bounds::budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerGpus {
    /// An aggregated worker's GPUs. Default 1.
    pub aggregated: usize,
    /// A prefill worker's GPUs. Default 1.
    pub prefill: usize,
    /// A decode worker's GPUs. Default 1.
    pub decode: usize,
}

impl Default for WorkerGpus {
    fn default() -> Self {
        WorkerGpus {
            aggregated: 1,
            prefill: 1,
            decode: 1,
        }
    }
}

impl WorkerGpus {
    /// The GPUs of one worker of `role`.
    pub fn of(&self, role: WorkerRole) -> usize {
        match role {
            WorkerRole::Aggregated => self.aggregated,
            WorkerRole::Prefill => self.prefill,
            WorkerRole::Decode => self.decode,
        }
    }

    /// The GPUs of every worker of `replicas`.
    pub fn of_pools(&self, replicas: Replicas) -> usize {
        replicas
            .pools()
            .into_iter()
            .map(|(role, workers)| workers.saturating_mul(self.of(role)))
            .fold(0, usize::saturating_add)
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            min_per_pool: 1,
            max_per_pool: 8,
            budget: 8,
            gpus: WorkerGpus::default(),
        }
    }
}

impl Bounds {
    /// Check that the bounds can be met by one pool of one-GPU workers.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] when the minimum is 0 or above the maximum, the budget is below the
    /// minimum, or a role's workers hold no GPU.
    pub fn check(&self) -> Result<(), Error> {
        let gpus = self.gpus;
        let reason = if self.min_per_pool == 0 {
            Some("each pool needs at least one worker".to_string())
        } else if self.min_per_pool > self.max_per_pool {
            Some(format!(
                "the minimum {} is above the maximum {}",
                self.min_per_pool, self.max_per_pool
            ))
        } else if self.budget < self.min_per_pool {
            Some(format!(
                "the budget {} is below the minimum {}",
                self.budget, self.min_per_pool
            ))
        } else if gpus.aggregated == 0 || gpus.prefill == 0 || gpus.decode == 0 {
            Some(format!("every worker holds at least one GPU: {gpus:?}"))
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::Setting {
                setting: "bounds",
                reason,
            }),
            None => Ok(()),
        }
    }

    /// [`check`](Self::check), and that the budget pays for the least pools of `shape`'s
    /// kind: `min_per_pool` aggregated workers, or `min_per_pool` prefill and as many decode
    /// workers, each at its role's GPUs (the counts in `shape` are not read). Where it does
    /// not, [`apply`](Self::apply) keeps those pools over the budget.
    ///
    /// ```
    /// use dynamo_planner::{Bounds, Replicas, WorkerGpus};
    ///
    /// // One prefill worker of one GPU and one decode worker of four: 5 GPUs at the least.
    /// let bounds = Bounds {
    ///     budget: 4,
    ///     gpus: WorkerGpus { decode: 4, ..WorkerGpus::default() },
    ///     ..Bounds::default()
    /// };
    /// assert!(bounds.check_for(Replicas::Aggregated(1)).is_ok());
    /// let split = Replicas::Disaggregated { prefill: 1, decode: 1 };
    /// assert!(bounds.check_for(split).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] as [`check`](Self::check), or when the least pools need more GPUs
    /// than the budget.
    pub fn check_for(&self, shape: Replicas) -> Result<(), Error> {
        self.check()?;
        let min = self.min_per_pool;
        let least = match shape {
            Replicas::Aggregated(_) => Replicas::Aggregated(min),
            Replicas::Disaggregated { .. } => Replicas::Disaggregated {
                prefill: min,
                decode: min,
            },
        };
        let needed = self.gpus.of_pools(least);
        if needed > self.budget {
            return Err(Error::Setting {
                setting: "bounds",
                reason: format!(
                    "the budget of {} GPUs is below the {needed} GPUs of the least pools, \
                     {least} ({})",
                    self.budget,
                    self.describe(least)
                ),
            });
        }
        Ok(())
    }

    /// `wanted` within the bounds: each pool clamped to its range, then, over the budget,
    /// the prefill pool shrunk in proportion and the decode pool given what GPUs it leaves
    /// (never below the minimum). Pools whose minimum costs more than the budget keep the
    /// minimum.
    pub fn apply(&self, wanted: Replicas) -> Replicas {
        let min = self.min_per_pool;
        let clamp = |n: usize| n.clamp(min, self.max_per_pool);
        // Workers of `gpus` each that `budget` GPUs pay for, the minimum at least.
        let within = |budget: usize, gpus: usize| (budget / gpus.max(1)).max(min);
        match wanted {
            Replicas::Aggregated(n) => {
                Replicas::Aggregated(clamp(n).min(within(self.budget, self.gpus.aggregated)))
            }
            Replicas::Disaggregated { prefill, decode } => {
                let (mut prefill, mut decode) = (clamp(prefill), clamp(decode));
                let cost = self
                    .gpus
                    .of_pools(Replicas::Disaggregated { prefill, decode });
                if cost > self.budget {
                    let (per_prefill, per_decode) = (self.gpus.prefill, self.gpus.decode);
                    // Leave the decode pool its minimum within the budget.
                    let decode_least = min.saturating_mul(per_decode);
                    let most = within(self.budget.saturating_sub(decode_least), per_prefill);
                    prefill = (prefill.saturating_mul(self.budget) / cost).clamp(min, most);
                    let left = self
                        .budget
                        .saturating_sub(prefill.saturating_mul(per_prefill));
                    decode = within(left, per_decode).min(decode);
                }
                Replicas::Disaggregated { prefill, decode }
            }
        }
    }

    /// The bounds in words, for a decision they cut, naming the GPUs of the roles of
    /// `replicas` when a worker holds more than one: `1 to 8 workers a pool, 8 GPUs in all`.
    pub(crate) fn describe(&self, replicas: Replicas) -> String {
        let mut text = format!(
            "{} to {} workers a pool, {} GPUs in all",
            self.min_per_pool, self.max_per_pool, self.budget
        );
        let pools = replicas.pools();
        if pools.iter().any(|&(role, _)| self.gpus.of(role) > 1) {
            let each: Vec<String> = pools
                .iter()
                .map(|&(role, _)| format!("{} a {} worker", self.gpus.of(role), role.as_str()))
                .collect();
            text = format!("{text} at {}", each.join(" and "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_one_gpu_a_worker_the_budget_counts_workers() {
        let bounds = Bounds::default();
        let split = |prefill, decode| Replicas::Disaggregated { prefill, decode };
        assert_eq!(
            bounds.apply(Replicas::Aggregated(12)),
            Replicas::Aggregated(8)
        );
        assert_eq!(bounds.apply(split(6, 6)), split(4, 4));
        assert_eq!(bounds.apply(split(7, 1)), split(7, 1));
        assert_eq!(bounds.apply(split(8, 8)), split(4, 4));
        assert_eq!(bounds.apply(split(8, 2)), split(6, 2));
    }

    #[test]
    fn each_worker_costs_its_role_s_gpus() {
        let gpus = WorkerGpus {
            aggregated: 2,
            prefill: 2,
            decode: 4,
        };
        let bounds = Bounds {
            max_per_pool: 16,
            budget: 16,
            gpus,
            ..Bounds::default()
        };
        // Eight aggregated workers of two GPUs fill 16.
        assert_eq!(
            bounds.apply(Replicas::Aggregated(12)),
            Replicas::Aggregated(8)
        );
        let split = |prefill, decode| Replicas::Disaggregated { prefill, decode };
        // 4 × 2 + 2 × 4 = 16: within.
        assert_eq!(bounds.apply(split(4, 2)), split(4, 2));
        // 6 × 2 + 3 × 4 = 24: prefill scaled by 16/24 to 4 (8 GPUs), decode the 8 left, 2.
        assert_eq!(bounds.apply(split(6, 3)), split(4, 2));
        // Prefill never takes the decode pool's minimum: 6 prefill workers (12 GPUs) at most.
        assert_eq!(bounds.apply(split(16, 1)), split(6, 1));
        assert!(gpus.of_pools(bounds.apply(split(16, 1))) <= 16);
    }

    #[test]
    fn a_minimum_over_the_budget_is_kept() {
        let bounds = Bounds {
            min_per_pool: 2,
            budget: 6,
            gpus: WorkerGpus {
                aggregated: 4,
                prefill: 2,
                decode: 2,
            },
            ..Bounds::default()
        };
        assert!(bounds.check().is_ok());
        // Two aggregated workers of four GPUs cost 8; two prefill and two decode of two, 8.
        let error = bounds.check_for(Replicas::Aggregated(1)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("below the 8 GPUs of the least pools"),
            "{error}"
        );
        // Checked or not, `apply` keeps the minimum.
        assert_eq!(
            bounds.apply(Replicas::Aggregated(5)),
            Replicas::Aggregated(2)
        );
        let split = Replicas::Disaggregated {
            prefill: 2,
            decode: 2,
        };
        assert!(bounds.check_for(split).is_err());
        assert_eq!(bounds.apply(split), split);
    }

    #[test]
    fn a_worker_with_no_gpu_is_a_setting_error() {
        let bounds = Bounds {
            gpus: WorkerGpus {
                prefill: 0,
                ..WorkerGpus::default()
            },
            ..Bounds::default()
        };
        let error = bounds.check().map(|()| "accepted").unwrap_err();
        assert!(error.to_string().contains("at least one GPU"), "{error}");
    }
}
