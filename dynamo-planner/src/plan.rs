//! One planning step: predict, ask the policy, respect the bounds, say why.

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

use crate::observe::Observation;
use crate::policy::{Forecast, Policy, PoolRule, Proposal, Rule};
use crate::predict::Predictor;
use crate::{Bounds, Error};

/// The replica counts of a deployment's worker pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replicas {
    /// One pool of aggregated workers.
    Aggregated(usize),
    /// A prefill pool and a decode pool.
    Disaggregated {
        /// Prefill workers.
        prefill: usize,
        /// Decode workers.
        decode: usize,
    },
}

impl std::fmt::Display for Replicas {
    /// `3 workers`, or `2 prefill and 4 decode workers`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replicas::Aggregated(workers) => write!(f, "{workers} workers"),
            Replicas::Disaggregated { prefill, decode } => {
                write!(f, "{prefill} prefill and {decode} decode workers")
            }
        }
    }
}

impl Replicas {
    /// Workers in all pools.
    pub fn total(self) -> usize {
        match self {
            Replicas::Aggregated(workers) => workers,
            Replicas::Disaggregated { prefill, decode } => prefill + decode,
        }
    }

    /// Each pool with its count: the aggregated pool, or the prefill pool then the decode
    /// pool.
    ///
    /// ```
    /// use dynamo_core::WorkerRole;
    /// use dynamo_planner::Replicas;
    ///
    /// let split = Replicas::Disaggregated { prefill: 2, decode: 3 };
    /// assert_eq!(split.pools(), [(WorkerRole::Prefill, 2), (WorkerRole::Decode, 3)]);
    /// ```
    pub fn pools(self) -> Vec<(WorkerRole, usize)> {
        match self {
            Replicas::Aggregated(n) => vec![(WorkerRole::Aggregated, n)],
            Replicas::Disaggregated { prefill, decode } => {
                vec![(WorkerRole::Prefill, prefill), (WorkerRole::Decode, decode)]
            }
        }
    }
}

/// How the planner runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannerConfig {
    /// Seconds between planning steps. Default 60.
    pub interval_s: f64,
    /// The limits of every decision.
    pub bounds: Bounds,
    /// Only log and record decisions; never change the deployment. Default false.
    pub advisory: bool,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            interval_s: 60.0,
            bounds: Bounds::default(),
            advisory: false,
        }
    }
}

/// What one planning step decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The replica counts the planner wants, within the bounds.
    pub target: Replicas,
    /// The counts when the step began.
    pub current: Replicas,
    /// What the predictors expect of the next interval.
    pub forecast: Forecast,
    /// Why, in a sentence.
    pub reason: String,
    /// The rule that set each pool's target, in [`Replicas::pools`]'s order: the policy's,
    /// or [`Rule::Bounds`] where the bounds changed what it proposed.
    pub rules: Vec<PoolRule>,
    /// Whether the caller should act on it (false in advisory mode).
    pub act: bool,
}

/// Predictors of the next interval's load, a policy, and the bounds.
pub struct Planner {
    config: PlannerConfig,
    policy: Box<dyn Policy>,
    requests: Box<dyn Predictor>,
    input_tokens: Box<dyn Predictor>,
    output_tokens: Box<dyn Predictor>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("config", &self.config)
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner that asks `policy`, forecasting each load figure with a fresh predictor from
    /// `predictor`.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for bounds that cannot be met or an interval that is not positive.
    pub fn new(
        config: PlannerConfig,
        policy: impl Policy + 'static,
        predictor: impl Fn() -> Box<dyn Predictor>,
    ) -> Result<Self, Error> {
        config.bounds.check()?;
        if config.interval_s.is_nan() || config.interval_s <= 0.0 {
            return Err(Error::Setting {
                setting: "interval_s",
                reason: format!("{} is not a positive number of seconds", config.interval_s),
            });
        }
        Ok(Planner {
            config,
            policy: Box::new(policy),
            requests: predictor(),
            input_tokens: predictor(),
            output_tokens: predictor(),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// One planning step: learn from `observed`, forecast the next interval, and decide the
    /// pools' sizes, starting from `current`. Logs the decision and records it as metrics.
    ///
    /// An interval whose traffic was not all heard ([`Observation::traffic_unheard`]) teaches
    /// the predictors nothing, and goes to [`Policy::plan_unheard`] with the last forecast.
    pub fn tick(&mut self, observed: &Observation, current: Replicas) -> Decision {
        if observed.traffic_unheard {
            metrics::counter!("dynamo_planner_traffic_unheard_steps_total").increment(1);
        } else {
            self.requests.observe(observed.requests_per_s());
            if observed.requests > 0 {
                self.input_tokens.observe(observed.mean_input_tokens);
                self.output_tokens.observe(observed.mean_output_tokens);
            }
        }
        let forecast = Forecast {
            requests_per_s: self.requests.predict().max(0.0),
            input_tokens: self.input_tokens.predict().max(0.0),
            output_tokens: self.output_tokens.predict().max(0.0),
        };
        let proposal = if observed.traffic_unheard {
            self.policy.plan_unheard(observed, &forecast, current)
        } else {
            self.policy.plan(observed, &forecast, current)
        };
        let target = self.config.bounds.apply(proposal.target);
        let rules = rules(&proposal, target);
        let mut reason = proposal.reason;
        if target != proposal.target {
            let bounds = self.config.bounds.describe(target);
            reason = format!("{reason}; within the bounds ({bounds}): {target}");
        }
        let decision = Decision {
            target,
            current,
            forecast,
            reason,
            rules,
            act: !self.config.advisory,
        };
        record(self.policy.name(), observed, &decision);
        decision
    }
}

/// The rule that set each pool of `target`: the proposal's, or the bounds' where they
/// changed the pool's count (or the proposal had no such pool).
fn rules(proposal: &Proposal, target: Replicas) -> Vec<PoolRule> {
    let proposed = proposal.target.pools();
    target
        .pools()
        .into_iter()
        .map(|(pool, n)| {
            let kept = proposed.contains(&(pool, n));
            let rule = if kept {
                proposal.rule(pool)
            } else {
                Rule::Bounds
            };
            PoolRule::new(pool, rule)
        })
        .collect()
}

/// The decision as a log line and as metrics: the step counted, what was observed and
/// forecast, each pool's count at the step's start and its target, and the rule that set it.
fn record(policy: &'static str, observed: &Observation, decision: &Decision) {
    let rules: Vec<String> = decision
        .rules
        .iter()
        .map(|r| format!("{}={}", r.pool.as_str(), r.rule.as_str()))
        .collect();
    tracing::info!(
        policy,
        current = ?decision.current,
        target = ?decision.target,
        rules = %rules.join(","),
        requests_per_s = decision.forecast.requests_per_s,
        input_tokens = decision.forecast.input_tokens,
        output_tokens = decision.forecast.output_tokens,
        act = decision.act,
        "planner: {}",
        decision.reason
    );
    metrics::counter!("dynamo_planner_steps_total", "policy" => policy).increment(1);
    for (pool, replicas) in decision.current.pools() {
        metrics::gauge!("dynamo_planner_current_replicas", "pool" => pool.as_str())
            .set(replicas as f64);
    }
    for (pool, replicas) in decision.target.pools() {
        metrics::gauge!("dynamo_planner_target_replicas", "pool" => pool.as_str())
            .set(replicas as f64);
    }
    for PoolRule { pool, rule } in &decision.rules {
        metrics::counter!(
            "dynamo_planner_rule_steps_total",
            "pool" => pool.as_str(),
            "rule" => rule.as_str()
        )
        .increment(1);
    }
    let forecast = &decision.forecast;
    metrics::gauge!("dynamo_planner_predicted_requests_per_second").set(forecast.requests_per_s);
    metrics::gauge!("dynamo_planner_predicted_input_tokens").set(forecast.input_tokens);
    metrics::gauge!("dynamo_planner_predicted_output_tokens").set(forecast.output_tokens);
    metrics::gauge!("dynamo_planner_observed_requests_per_second").set(observed.requests_per_s());
    metrics::gauge!("dynamo_planner_observed_kv_hit_rate").set(observed.kv_hit_rate);
    let latencies = [
        (
            "dynamo_planner_observed_ttft_seconds",
            observed.mean_ttft_ms,
        ),
        ("dynamo_planner_observed_itl_seconds", observed.mean_itl_ms),
    ];
    for (name, mean_ms) in latencies {
        if let Some(ms) = mean_ms {
            metrics::gauge!(name).set(ms / 1000.0);
        }
    }
}
