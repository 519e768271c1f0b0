//! Planning policies: from a forecast of the next interval to replica counts.

use serde::{Deserialize, Serialize};

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
}

/// Turns what was observed and what is forecast into replica counts.
pub trait Policy: Send {
    /// Its name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// The pools' sizes for the next interval, starting from `current`.
    fn plan(&mut self, observed: &Observation, forecast: &Forecast, current: Replicas) -> Proposal;
}
