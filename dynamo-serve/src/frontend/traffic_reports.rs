//! [`TrafficReports`]: the frontend's traffic, published on NATS for the planner.

use std::time::Duration;

use dynamo_core::layers::Traffic;
use dynamo_core::{BoxEngine, EngineExt};
use dynamo_transport::events::{EventPlane, FrontendTraffic, NatsEvents};
use tokio::task::JoinHandle;
use tower::Layer;

/// How often a frontend publishes its traffic.
pub(crate) const TRAFFIC_EVERY: Duration = Duration::from_secs(1);

/// Counts the requests through the frontend's engine and publishes them every
/// [`TRAFFIC_EVERY`] as `FrontendTraffic`, under an id drawn at start: the planner's view of the
/// traffic. An idle frontend publishes empty reports, so a planner can tell a frontend it no
/// longer hears from one with no requests; a frontend that stops says so in its last report,
/// so a planner does not wait for it.
pub(super) struct TrafficReports {
    nats: NatsEvents,
    frontend: u64,
    traffic: Traffic,
    publisher: JoinHandle<()>,
}

impl TrafficReports {
    /// Publish from now on.
    pub(super) fn start(nats: NatsEvents) -> Self {
        let (frontend, traffic) = (rand::random(), Traffic::new());
        let publisher = tokio::spawn(publish(nats.clone(), frontend, traffic.clone()));
        TrafficReports {
            nats,
            frontend,
            traffic,
            publisher,
        }
    }

    /// `engine`, its requests counted.
    pub(super) fn count(&self, engine: BoxEngine) -> BoxEngine {
        self.traffic.layer().layer(engine).boxed_engine()
    }

    /// Stop: publish what was counted since the last report as the last, and wait until NATS
    /// has it.
    pub(super) async fn finish(self) {
        self.publisher.abort();
        let report = FrontendTraffic {
            frontend: self.frontend,
            traffic: self.traffic.take(),
            last: true,
        };
        let published = match self.nats.publish(&report).await {
            Ok(()) => self.nats.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = published {
            tracing::debug!(%error, "the last traffic report was not published");
        }
    }
}

async fn publish(nats: NatsEvents, frontend: u64, traffic: Traffic) {
    let mut every = tokio::time::interval(TRAFFIC_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let report = FrontendTraffic {
            frontend,
            traffic: traffic.take(),
            last: false,
        };
        if let Err(error) = nats.publish(&report).await {
            tracing::debug!(%error, "a traffic report was not published");
        }
    }
}
