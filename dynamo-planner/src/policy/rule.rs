//! Which rule of a policy set a pool's size: the gist of a step's reason, typed, for metrics
//! and for tallies over a replay.

use dynamo_core::WorkerRole;
use serde::{Deserialize, Serialize};

/// The rule that set one pool's size at a planning step.
///
/// The step's reason says the same in a sentence, with the figures; this is what a dashboard
/// counts (`dynamo_planner_rule_steps_total{pool, rule}`) and what a replay's timeline carries,
/// so that how long each rule held a pool can be summed without reading sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The plan for the forecast load: the pool grows to it, keeps it, or (a policy without
    /// a scale-down wait, such as Dynamo's) shrinks to it.
    Plan,
    /// Latencies, queues or KV usage past their limits: the pool grows now, or keeps its size
    /// while the workers asked for join.
    Pressure,
    /// Still under pressure, but the backlog is draining since the pool last grew: it grows
    /// no further than its plan.
    Draining,
    /// The plan wants fewer workers, but the pool's latencies or queues are not calm enough.
    Unsettled,
    /// The plan wants fewer workers, but too little of the load has been seen yet.
    Warmup,
    /// The plan wants fewer workers, but the largest plan of the hold window does not fit in
    /// one worker fewer.
    Window,
    /// The plan wants fewer workers, but the room kept for a predictable load's largest rise
    /// above the plan does not fit in one worker fewer.
    RiseRoom,
    /// Calm, not yet for long enough to shrink.
    Calming,
    /// Calm for long enough: one worker fewer.
    Shrink,
    /// A decode pool cut to what its prefill pool can hand over.
    Ceiling,
    /// Nothing to act on (no worker reported, or the interval's traffic was not all heard):
    /// the pool keeps its size.
    Unheard,
    /// The policy's size was outside the bounds (each pool's minimum and maximum, the budget
    /// of GPUs), which set it.
    Bounds,
}

impl Rule {
    /// Its name in metrics and JSON: `plan`, `rise_room`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Plan => "plan",
            Rule::Pressure => "pressure",
            Rule::Draining => "draining",
            Rule::Unsettled => "unsettled",
            Rule::Warmup => "warmup",
            Rule::Window => "window",
            Rule::RiseRoom => "rise_room",
            Rule::Calming => "calming",
            Rule::Shrink => "shrink",
            Rule::Ceiling => "ceiling",
            Rule::Unheard => "unheard",
            Rule::Bounds => "bounds",
        }
    }
}

/// The rule that set one pool's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRule {
    /// The pool.
    pub pool: WorkerRole,
    /// The rule.
    pub rule: Rule,
}

impl PoolRule {
    /// `rule` for `pool`.
    pub fn new(pool: WorkerRole, rule: Rule) -> Self {
        PoolRule { pool, rule }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_metrics_are_the_json_names() -> Result<(), serde_json::Error> {
        for rule in [Rule::Plan, Rule::RiseRoom, Rule::Bounds] {
            assert_eq!(serde_json::to_value(rule)?, rule.as_str());
        }
        let json = serde_json::to_value(PoolRule::new(WorkerRole::Decode, Rule::Window))?;
        assert_eq!(
            json,
            serde_json::json!({"pool": "decode", "rule": "window"})
        );
        Ok(())
    }
}
