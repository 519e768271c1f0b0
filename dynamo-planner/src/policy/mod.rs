//! Planning policies: from a forecast of the next interval to replica counts.
//!
//! | policy | needs | plans by |
//! |---|---|---|
//! | [`DynamoSla`] | a [`PerfProfile`](crate::perf::PerfProfile) | NVIDIA Dynamo's throughput-based SLA algorithm (the baseline) |
//! | [`SlaPolicy`] | a [`PerfProfile`](crate::perf::PerfProfile) | capacity for the uncached load with the headroom a learned queueing model says the traffic's burstiness needs, reacting at once to SLA misses and queues, shrinking only when five minutes of plans fit (or follow them when they fall along a trend), a disaggregated decode pool capped by what its prefill pool hands over |
//! | [`LoadPolicy`] | nothing | per-worker queues and KV usage, with hysteresis |
//!
//! [`PolicyKind`] names them for a command line. Each handles [`Replicas::Aggregated`] and
//! [`Replicas::Disaggregated`], says in [`Proposal::reason`] which figures drove its choice,
//! and names in [`Proposal::rules`] the [`Rule`] that set each pool's size.

mod dynamo;
mod kind;
mod load;
mod pool;
mod rule;
mod sla;

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

pub use dynamo::{DynamoSla, DynamoSlaConfig};
pub use kind::PolicyKind;
pub use load::{LoadConfig, LoadPolicy};
pub use rule::{PoolRule, Rule};
pub use sla::{SlaConfig, SlaPolicy};

use crate::observe::Observation;
use crate::plan::Replicas;

/// What the predictors expect of the next interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Arrivals per second.
    pub requests_per_s: f64,
    /// Mean prompt length, in tokens.
    pub input_tokens: f64,
    /// Mean output length, in tokens.
    pub output_tokens: f64,
}

/// What a policy proposes, before the bounds apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The replica counts it wants.
    pub target: Replicas,
    /// Why, in a sentence a person reading the log understands.
    pub reason: String,
    /// The rule that set each pool's size; a pool not named here counts as [`Rule::Plan`].
    pub rules: Vec<PoolRule>,
}

impl Proposal {
    /// `target` for `reason`, every pool set by its plan ([`Rule::Plan`]): what a policy that
    /// has one rule proposes.
    pub fn new(target: Replicas, reason: impl Into<String>) -> Self {
        Proposal {
            target,
            reason: reason.into(),
            rules: Vec::new(),
        }
    }

    /// The rule that set `pool`'s size.
    pub fn rule(&self, pool: WorkerRole) -> Rule {
        self.rules
            .iter()
            .find(|r| r.pool == pool)
            .map_or(Rule::Plan, |r| r.rule)
    }
}

/// Turns what was observed and what is forecast into replica counts.
pub trait Policy: Send {
    /// Its name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// The pools' sizes for the next interval, starting from `current`.
    fn plan(&mut self, observed: &Observation, forecast: &Forecast, current: Replicas) -> Proposal;

    /// The pools' sizes after an interval whose traffic was not all heard
    /// ([`Observation::traffic_unheard`]): its arrivals, lengths and latencies count only
    /// part of it, and `forecast` is the one before it. By default the pools keep their
    /// sizes; a policy that can act on the workers' own figures says how.
    fn plan_unheard(
        &mut self,
        observed: &Observation,
        forecast: &Forecast,
        current: Replicas,
    ) -> Proposal {
        let _ = (observed, forecast);
        Proposal {
            target: current,
            reason: format!("the interval's traffic was not all heard: keep {current}"),
            rules: current
                .pools()
                .into_iter()
                .map(|(pool, _)| PoolRule::new(pool, Rule::Unheard))
                .collect(),
        }
    }
}

/// A boxed policy is a policy, so one chosen at run time ([`PolicyKind::build`]) goes
/// wherever a policy does.
impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn plan(&mut self, observed: &Observation, forecast: &Forecast, current: Replicas) -> Proposal {
        (**self).plan(observed, forecast, current)
    }

    fn plan_unheard(
        &mut self,
        observed: &Observation,
        forecast: &Forecast,
        current: Replicas,
    ) -> Proposal {
        (**self).plan_unheard(observed, forecast, current)
    }
}

/// The latency targets of a service-level agreement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlaTargets {
    /// Time to first token, in milliseconds. Default 500.
    pub ttft_ms: f64,
    /// Time between output tokens, in milliseconds. Default 50.
    pub itl_ms: f64,
}

impl Default for SlaTargets {
    fn default() -> Self {
        SlaTargets {
            ttft_ms: 500.0,
            itl_ms: 50.0,
        }
    }
}
