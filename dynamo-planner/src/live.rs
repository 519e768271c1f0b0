//! The planner on a live deployment: observe an interval, take a step, scale.

use dynamo_core::WorkerRole;
use futures::{Stream, StreamExt};

use crate::{Decision, Error, Observation, Planner, Replicas, Scaler};

/// Drive `planner` on a live deployment until `observations` ends.
///
/// For each [`Observation`] (one per planning interval: the source paces the loop, for example
/// a stream that gathers the workers' load reports and the gateway's counters and yields every
/// [`PlannerConfig::interval_s`](crate::PlannerConfig::interval_s)), the loop reads the pools'
/// sizes from `scaler`, takes one [`Planner::tick`], and, when the decision says to act and
/// differs from the current sizes, asks `scaler` for the target. `shape` names the pools: an
/// aggregated deployment (one pool), or a disaggregated one (prefill and decode); its counts
/// are not used. A scaler that fails is logged and tried again at the next interval. Returns
/// the decisions, in order.
///
/// Cancel safety: dropping the future loses no observation already taken, but a scale call in
/// progress may or may not have been made.
///
/// ```no_run
/// # async fn run(
/// #     mut planner: dynamo_planner::Planner,
/// #     scaler: &dyn dynamo_planner::Scaler,
/// #     observations: futures::stream::BoxStream<'static, dynamo_planner::Observation>,
/// # ) {
/// use dynamo_planner::Replicas;
///
/// let decisions = dynamo_planner::run(&mut planner, observations, scaler, Replicas::Aggregated(1)).await;
/// tracing::info!("{} planning steps", decisions.len());
/// # }
/// ```
pub async fn run(
    planner: &mut Planner,
    observations: impl Stream<Item = Observation>,
    scaler: &dyn Scaler,
    shape: Replicas,
) -> Vec<Decision> {
    let mut observations = std::pin::pin!(observations);
    let mut decisions = Vec::new();
    while let Some(observed) = observations.next().await {
        let current = match sizes(scaler, shape).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "planner: cannot read the pools' sizes; skipping a step");
                continue;
            }
        };
        let decision = planner.tick(&observed, current);
        if decision.act && decision.target != current {
            for (pool, replicas) in pools(decision.target) {
                if let Err(error) = scaler.scale(pool, replicas).await {
                    tracing::warn!(%error, "planner: scaling failed; the next step tries again");
                }
            }
        }
        decisions.push(decision);
    }
    decisions
}

/// The pools of `replicas` with their counts.
fn pools(replicas: Replicas) -> Vec<(WorkerRole, usize)> {
    match replicas {
        Replicas::Aggregated(n) => vec![(WorkerRole::Aggregated, n)],
        Replicas::Disaggregated { prefill, decode } => {
            vec![(WorkerRole::Prefill, prefill), (WorkerRole::Decode, decode)]
        }
    }
}

/// The sizes `scaler` was asked for, in the pools of `shape`.
async fn sizes(scaler: &dyn Scaler, shape: Replicas) -> Result<Replicas, Error> {
    Ok(match shape {
        Replicas::Aggregated(_) => {
            Replicas::Aggregated(scaler.size(WorkerRole::Aggregated).await?.desired)
        }
        Replicas::Disaggregated { .. } => Replicas::Disaggregated {
            prefill: scaler.size(WorkerRole::Prefill).await?.desired,
            decode: scaler.size(WorkerRole::Decode).await?.desired,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::policy::{Forecast, Policy, Proposal};
    use crate::predict::{Constant, Predictor};
    use crate::{PlannerConfig, PoolSize};

    /// One worker per two requests a second.
    struct Proportional;

    impl Policy for Proportional {
        fn name(&self) -> &'static str {
            "proportional"
        }

        fn plan(&mut self, _: &Observation, forecast: &Forecast, _: Replicas) -> Proposal {
            let workers = (forecast.requests_per_s / 2.0).ceil() as usize;
            Proposal {
                target: Replicas::Aggregated(workers),
                reason: format!("{workers} workers"),
            }
        }
    }

    /// Records the scale calls; sizes take effect at once.
    #[derive(Default)]
    struct Recorder {
        desired: Mutex<usize>,
        calls: Mutex<Vec<usize>>,
    }

    impl Scaler for Recorder {
        fn size(&self, _: WorkerRole) -> BoxFuture<'_, Result<PoolSize, Error>> {
            let desired = *self.desired.lock().expect("not poisoned");
            Box::pin(async move {
                Ok(PoolSize {
                    desired,
                    ready: desired,
                })
            })
        }

        fn scale(&self, _: WorkerRole, replicas: usize) -> BoxFuture<'_, Result<(), Error>> {
            *self.desired.lock().expect("not poisoned") = replicas;
            self.calls.lock().expect("not poisoned").push(replicas);
            Box::pin(async { Ok(()) })
        }
    }

    fn interval(requests: u64) -> Observation {
        Observation {
            interval_s: 1.0,
            requests,
            ..Observation::default()
        }
    }

    fn planner(advisory: bool) -> Planner {
        let config = PlannerConfig {
            interval_s: 1.0,
            advisory,
            ..PlannerConfig::default()
        };
        Planner::new(config, Proportional, || {
            Box::new(Constant::default()) as Box<dyn Predictor>
        })
        .expect("a valid planner")
    }

    #[tokio::test]
    async fn each_observation_is_a_step_and_changes_are_scaled() {
        let scaler = Recorder {
            desired: Mutex::new(1),
            ..Recorder::default()
        };
        let load = futures::stream::iter([2, 6, 6, 3, 30].map(interval));
        let decisions = run(&mut planner(false), load, &scaler, Replicas::Aggregated(1)).await;
        let targets: Vec<Replicas> = decisions.iter().map(|d| d.target).collect();
        let expected = [1, 3, 3, 2, 8].map(Replicas::Aggregated);
        assert_eq!(targets, expected, "within the default bounds (1..=8)");
        assert_eq!(decisions[1].current, Replicas::Aggregated(1));
        // No call when the target is the current size.
        assert_eq!(*scaler.calls.lock().expect("not poisoned"), [3, 2, 8]);
    }

    #[tokio::test]
    async fn an_advisory_planner_never_scales() {
        let scaler = Recorder {
            desired: Mutex::new(1),
            ..Recorder::default()
        };
        let load = futures::stream::iter([10, 20].map(interval));
        let decisions = run(&mut planner(true), load, &scaler, Replicas::Aggregated(1)).await;
        assert_eq!(decisions.len(), 2);
        assert!(scaler.calls.lock().expect("not poisoned").is_empty());
    }
}
