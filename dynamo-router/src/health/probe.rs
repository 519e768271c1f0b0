//! Canaries: the future that probes ejected and idle workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dynamo_core::{EngineExt, ErrorClass, GenerateRequest, WorkerId};

use super::ReportedLoad;
use super::tracker::Failure;
use crate::RouterService;

/// Numbers the canaries, for their request ids.
static CANARIES: AtomicU64 = AtomicU64::new(0);

/// How a canary went.
enum Answer {
    /// The worker answered, if only with an error that is not its unavailability.
    Answered,
    /// It answered `unavailable`.
    Unavailable(String),
    /// It did not answer within the deadline; the canary was sent then.
    Silent(Instant),
}

impl RouterService {
    /// A future that sends canaries, each
    /// [`probe_interval`](crate::health::HealthConfig::probe_interval), to every ejected
    /// worker (one that answers returns to routing) and, when configured, to every routed
    /// worker idle for that long (one that does not answer in time is ejected). It never
    /// ends; spawn it on your runtime, and drop it to stop probing. See
    /// [`health`](crate::health).
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the canaries in flight, which cancels them.
    pub fn health_checks(&self) -> impl Future<Output = ()> + Send + 'static {
        let router = self.clone();
        async move {
            let interval = router.health().config().probe_interval;
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                router.probe_due().await;
            }
        }
    }

    /// Probe, at once and together, every worker due a canary.
    async fn probe_due(&self) {
        let due = self.health().due(tokio::time::Instant::now());
        let canaries = due.into_iter().map(|(worker, ejected)| async move {
            let answer = self.canary(worker).await;
            self.canary_answered(worker, ejected, answer);
        });
        futures::future::join_all(canaries).await;
    }

    /// Send `worker` a canary: one prompt token, one output token, under the probe deadline.
    async fn canary(&self, worker: WorkerId) -> Option<Answer> {
        let mut engine = self.engine(worker)?;
        let config = self.health().config();
        let number = CANARIES.fetch_add(1, Ordering::Relaxed);
        let request = GenerateRequest::new(
            format!("canary-{worker}-{number}"),
            config.canary_model.clone(),
            vec![1],
        )
        .with_max_tokens(1);
        let sent = now();
        let answer =
            match tokio::time::timeout(config.probe_timeout, engine.generate_all(request)).await {
                Err(_elapsed) => Answer::Silent(sent),
                Ok(Err(error)) if error.class() == ErrorClass::Unavailable => {
                    Answer::Unavailable(error.to_string())
                }
                Ok(_) => Answer::Answered,
            };
        Some(answer)
    }

    fn canary_answered(&self, worker: WorkerId, ejected: bool, answer: Option<Answer>) {
        let health = self.health();
        match answer {
            // The worker left meanwhile.
            None => {}
            Some(Answer::Answered) if ejected => health.returned(worker),
            Some(Answer::Answered) => health.succeeded(worker),
            Some(Answer::Unavailable(cause)) => {
                if ejected {
                    tracing::debug!("ejected worker {worker} is still unavailable: {cause}");
                } else {
                    health.failed(worker, Failure::Failed, &format!("canary: {cause}"));
                }
            }
            Some(Answer::Silent(sent)) => {
                if ejected {
                    tracing::debug!("ejected worker {worker} did not answer a canary");
                } else if let Some(report) = self.busy_beside_canary(worker, sent) {
                    // Queued behind other clients' work on a shared engine: not a hang.
                    tracing::info!(
                        "worker {worker} did not answer a canary within {:?}, but its engine \
                         reports {} running and {} waiting requests: it stays routed",
                        health.config().probe_timeout,
                        report.running,
                        report.waiting
                    );
                    metrics::counter!("dynamo_router_canaries_excused_total").increment(1);
                } else {
                    let cause = format!(
                        "it did not answer a canary within {:?}",
                        health.config().probe_timeout
                    );
                    health.failed(worker, Failure::Canary, &cause);
                }
            }
        }
    }
}

impl RouterService {
    /// `worker`'s fresh reported load, if it counts requests beside a canary sent at `sent`.
    fn busy_beside_canary(&self, worker: WorkerId, sent: Instant) -> Option<ReportedLoad> {
        self.selector()
            .reported_load(worker)
            .filter(|report| report.is_fresh(now()) && report.is_busy_beside_canary(sent))
    }
}

/// The current time, from tokio's clock so that paused-time tests control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
