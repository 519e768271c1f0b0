//! Load-based scaling: per-worker queues and KV usage, with hysteresis.

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

use super::pool::{PoolLoad, resize, slot};
use super::{Forecast, Policy, PoolRule, Proposal, Rule};
use crate::observe::Observation;
use crate::plan::Replicas;

/// The thresholds of [`LoadPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadConfig {
    /// Mean waiting requests per worker above which a pool grows. Default 2.
    pub waiting_up: f64,
    /// Mean KV usage above which a pool grows. Default 0.85.
    pub kv_up: f64,
    /// Waiting requests every worker must be at or below for a pool to count as calm.
    /// Default 0.
    pub waiting_down: f64,
    /// KV usage every worker must be at or below for a pool to count as calm. Default 0.5.
    pub kv_down: f64,
    /// Calm intervals in a row before a pool shrinks by one. Default 3.
    pub calm_intervals: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            waiting_up: 2.0,
            kv_up: 0.85,
            waiting_down: 0.0,
            kv_down: 0.5,
            calm_intervals: 3,
        }
    }
}

/// Scales each pool by one worker at a time from what its workers report
/// ([`WorkerLoad`](crate::WorkerLoad)): up when the mean waiting requests per worker or the
/// mean KV usage passes its upper threshold, down when every worker stayed at or below both
/// lower thresholds for `calm_intervals` intervals in a row. It needs no profile and ignores
/// the forecast; a pool whose workers did not report keeps its size.
#[derive(Debug, Clone, Default)]
pub struct LoadPolicy {
    config: LoadConfig,
    calm: [u32; 3],
}

impl LoadPolicy {
    /// The policy with these thresholds.
    pub fn new(config: LoadConfig) -> Self {
        LoadPolicy {
            config,
            calm: [0; 3],
        }
    }

    /// Its thresholds.
    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    fn size(&mut self, role: WorkerRole, current: usize, load: &PoolLoad) -> (usize, Rule, String) {
        let c = self.config;
        let calm = &mut self.calm[slot(role)];
        let figures = format!(
            "{} pool of {current}: {:.2} waiting per worker (up above {:.2}), mean KV usage {:.2} (up above {:.2})",
            role.as_str(),
            load.mean_waiting(),
            c.waiting_up,
            load.mean_kv,
            c.kv_up
        );
        if load.workers == 0 {
            *calm = 0;
            return (
                current,
                Rule::Unheard,
                format!(
                    "{} pool of {current}: no worker reported; keep it",
                    role.as_str()
                ),
            );
        }
        if load.mean_waiting() > c.waiting_up || load.mean_kv > c.kv_up {
            *calm = 0;
            return (
                current + 1,
                Rule::Pressure,
                format!("{figures}: grow by one to {}", current + 1),
            );
        }
        let quiet = load.max_waiting as f64 <= c.waiting_down && load.max_kv <= c.kv_down;
        if !quiet {
            *calm = 0;
            return (current, Rule::Unsettled, format!("{figures}: keep it"));
        }
        *calm += 1;
        let needed = c.calm_intervals.max(1);
        if *calm >= needed && current > 1 {
            *calm = 0;
            (
                current - 1,
                Rule::Shrink,
                format!(
                    "{figures}; every worker at most {} waiting and {:.2} KV usage for {needed} intervals: shrink by one to {}",
                    c.waiting_down,
                    c.kv_down,
                    current - 1
                ),
            )
        } else {
            (
                current,
                Rule::Calming,
                format!("{figures}; calm for {} of {needed} intervals", *calm),
            )
        }
    }
}

impl Policy for LoadPolicy {
    fn name(&self) -> &'static str {
        "load"
    }

    fn plan(
        &mut self,
        observed: &Observation,
        _forecast: &Forecast,
        current: Replicas,
    ) -> Proposal {
        let (mut parts, mut rules) = (Vec::new(), Vec::new());
        let target = resize(current, |role, n| {
            let (size, rule, why) = self.size(role, n, &PoolLoad::of(observed, role));
            parts.push(why);
            rules.push(PoolRule::new(role, rule));
            size
        });
        Proposal {
            target,
            reason: parts.join("; "),
            rules,
        }
    }

    /// The workers' queues and KV usage are all it reads: an interval whose traffic went
    /// unheard is planned as any other.
    fn plan_unheard(
        &mut self,
        observed: &Observation,
        forecast: &Forecast,
        current: Replicas,
    ) -> Proposal {
        self.plan(observed, forecast, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::WorkerLoad;

    fn observed(loads: &[(WorkerRole, u64, f64)]) -> Observation {
        Observation {
            interval_s: 60.0,
            workers: loads
                .iter()
                .map(|&(role, waiting, kv_usage)| WorkerLoad {
                    role,
                    waiting,
                    kv_usage,
                    ..WorkerLoad::default()
                })
                .collect(),
            ..Observation::default()
        }
    }

    const AGG: WorkerRole = WorkerRole::Aggregated;

    #[test]
    fn grows_on_queues_or_kv_usage() {
        let mut p = LoadPolicy::default();
        let f = Forecast::default();
        let queued = observed(&[(AGG, 5, 0.1), (AGG, 0, 0.1)]);
        let proposal = p.plan(&queued, &f, Replicas::Aggregated(2));
        assert_eq!(proposal.target, Replicas::Aggregated(3));
        assert!(
            proposal.reason.contains("2.50 waiting per worker"),
            "{}",
            proposal.reason
        );
        let full = observed(&[(AGG, 0, 0.95), (AGG, 0, 0.8)]);
        assert_eq!(
            p.plan(&full, &f, Replicas::Aggregated(2)).target,
            Replicas::Aggregated(3)
        );
    }

    #[test]
    fn shrinks_after_calm_intervals_with_hysteresis() {
        let mut p = LoadPolicy::default();
        let f = Forecast::default();
        let calm = observed(&[(AGG, 0, 0.2), (AGG, 0, 0.3), (AGG, 0, 0.1)]);
        let middling = observed(&[(AGG, 0, 0.2), (AGG, 1, 0.3), (AGG, 0, 0.1)]);
        let mut sizes = Vec::new();
        let mut current = Replicas::Aggregated(3);
        for o in [&calm, &calm, &middling, &calm, &calm, &calm, &calm] {
            current = p.plan(o, &f, current).target;
            sizes.push(current.total());
        }
        // The middling interval (one request waiting) resets the count.
        assert_eq!(sizes, [3, 3, 3, 3, 3, 2, 2]);
    }

    #[test]
    fn scales_disaggregated_pools_apart() {
        let mut p = LoadPolicy::default();
        let o = observed(&[(WorkerRole::Prefill, 9, 0.2), (WorkerRole::Decode, 0, 0.4)]);
        let current = Replicas::Disaggregated {
            prefill: 1,
            decode: 1,
        };
        let proposal = p.plan(&o, &Forecast::default(), current);
        assert_eq!(
            proposal.target,
            Replicas::Disaggregated {
                prefill: 2,
                decode: 1
            }
        );
        assert!(proposal.reason.contains("prefill pool of 1"));
        assert!(proposal.reason.contains("decode pool of 1"));
    }

    #[test]
    fn keeps_pools_without_reports() {
        let mut p = LoadPolicy::default();
        let proposal = p.plan(
            &Observation::default(),
            &Forecast::default(),
            Replicas::Aggregated(4),
        );
        assert_eq!(proposal.target, Replicas::Aggregated(4));
        assert!(proposal.reason.contains("no worker reported"));
    }
}
