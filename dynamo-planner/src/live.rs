//! The planner on a live deployment: observe an interval, take a step, scale.

use dynamo_core::WorkerRole;
use futures::{Stream, StreamExt};

use crate::{Decision, Error, Observation, Planner, Replicas, Scaler};

/// Drive `planner` on a live deployment, one step per observation, yielding each decision.
///
/// For each [`Observation`] (one per planning interval: the source paces the loop, for example
/// a stream that gathers the workers' load reports and the gateway's counters and yields every
/// [`PlannerConfig::interval_s`](crate::PlannerConfig::interval_s)), the returned stream reads
/// the pools' sizes from `scaler`, takes one [`Planner::tick`], and, when the decision says to
/// act and differs from the current sizes, asks `scaler` for the target before it yields the
/// decision. `shape` names the pools: an aggregated deployment (one pool), or a disaggregated
/// one (prefill and decode); its counts are not used. A scaler that fails is logged and tried
/// again at the next interval. The stream ends when `observations` does, and keeps nothing:
/// a planner that runs for months holds no more than one step's state (each decision is
/// already a log line and gauges, [`Planner::tick`]).
///
/// Nothing happens unless the stream is polled. Cancel safety: dropping it loses no
/// observation already taken, but a scale call in progress may or may not have been made.
///
/// ```no_run
/// # async fn run(
/// #     mut planner: dynamo_planner::Planner,
/// #     scaler: &dyn dynamo_planner::Scaler,
/// #     observations: futures::stream::BoxStream<'static, dynamo_planner::Observation>,
/// # ) {
/// use dynamo_planner::Replicas;
/// use futures::StreamExt;
///
/// let steps = dynamo_planner::run(&mut planner, observations, scaler, Replicas::Aggregated(1))
///     .count()
///     .await;
/// tracing::info!("{steps} planning steps");
/// # }
/// ```
pub fn run<'a>(
    planner: &'a mut Planner,
    observations: impl Stream<Item = Observation> + 'a,
    scaler: &'a dyn Scaler,
    shape: Replicas,
) -> impl Stream<Item = Decision> + 'a {
    let state = (planner, Box::pin(observations));
    futures::stream::unfold(state, move |(planner, mut observations)| async move {
        loop {
            let observed = observations.next().await?;
            let current = match sizes(scaler, shape).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::warn!(%error, "planner: cannot read the pools' sizes; skipping a step");
                    metrics::counter!("dynamo_planner_skipped_steps_total", "reason" => "sizes_unreadable")
                        .increment(1);
                    continue;
                }
            };
            let decision = planner.tick(&observed, current);
            if decision.act && decision.target != current {
                for (pool, replicas) in decision.target.pools() {
                    if let Err(error) = scaler.scale(pool, replicas).await {
                        tracing::warn!(%error, "planner: scaling failed; the next step tries again");
                        metrics::counter!("dynamo_planner_scale_errors_total", "pool" => pool.as_str())
                            .increment(1);
                    }
                }
            }
            return Some((decision, (planner, observations)));
        }
    })
}

/// The sizes `scaler` was asked for, in the pools of `shape`.
async fn sizes(scaler: &dyn Scaler, shape: Replicas) -> Result<Replicas, Error> {
    Ok(match shape {
        Replicas::Aggregated(_) => {
            Replicas::Aggregated(desired(scaler, WorkerRole::Aggregated).await?)
        }
        Replicas::Disaggregated { .. } => Replicas::Disaggregated {
            prefill: desired(scaler, WorkerRole::Prefill).await?,
            decode: desired(scaler, WorkerRole::Decode).await?,
        },
    })
}

/// The size `scaler` was asked for in `pool`; its ready workers go to the gauge
/// `dynamo_planner_ready_replicas`.
async fn desired(scaler: &dyn Scaler, pool: WorkerRole) -> Result<usize, Error> {
    let size = scaler.size(pool).await?;
    metrics::gauge!("dynamo_planner_ready_replicas", "pool" => pool.as_str())
        .set(size.ready as f64);
    Ok(size.desired)
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
            Proposal::new(Replicas::Aggregated(workers), format!("{workers} workers"))
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
        let mut planner = planner(false);
        let decisions: Vec<Decision> = run(&mut planner, load, &scaler, Replicas::Aggregated(1))
            .collect()
            .await;
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
        let mut planner = planner(true);
        let decisions: Vec<Decision> = run(&mut planner, load, &scaler, Replicas::Aggregated(1))
            .collect()
            .await;
        assert_eq!(decisions.len(), 2);
        assert!(scaler.calls.lock().expect("not poisoned").is_empty());
    }
}
