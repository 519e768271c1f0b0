//! Router replicas share their state: several frontends behind one load balancer, with the
//! same NATS server, book each other's requests and (in approximate mode) learn each other's
//! cache predictions.

use std::time::Instant;

use dynamo_core::{Error, ReplicaId, ReplicaUpdate};
use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
use dynamo_router::{ApproxIndex, RouterBuilder, RouterService};
use dynamo_transport::events::{EventPlane, exchange_replica_messages};

use crate::options::{Options, RouterKind};

/// The replica state, under a random id, of a router that shares: one of a `pool` with a
/// plane to share on and state worth sharing (round robin has none); else `None`.
pub(crate) fn replica(options: &Options, pool: Option<&'static str>) -> Option<ReplicaState> {
    let pool = pool.filter(|_| options.router != RouterKind::RoundRobin)?;
    let config = ReplicaConfig::new(ReplicaId(rand::random())).with_pool(pool);
    Some(ReplicaState::new(config))
}

/// `builder` booking load on `replica`'s tracker, which the other replicas' bookings reach,
/// when there is one.
pub(crate) fn book_on(builder: RouterBuilder, replica: Option<&ReplicaState>) -> RouterBuilder {
    match replica {
        Some(replica) => builder.load_tracker(replica.load()),
        None => builder,
    }
}

/// `builder` predicting the workers' caches from its own decisions, and with a replica from
/// the other replicas' too.
pub(crate) fn approximate(
    builder: RouterBuilder,
    replica: Option<&ReplicaState>,
    index: ApproxIndex,
) -> RouterBuilder {
    match replica {
        Some(replica) => builder.overlap_source(replica.predictions(index)),
        None => builder.overlap_source(index),
    }
}

/// Publish `state`'s messages on `plane`, apply the other replicas' (waking `router`'s
/// waiting requests when one releases load), publish a digest every digest interval, and ask
/// the others for their state; on spawned tasks.
pub(crate) async fn share<P: EventPlane>(
    plane: &P,
    state: ReplicaState,
    router: RouterService,
) -> Result<(), Error> {
    let outgoing = futures::stream::unfold(state.clone(), |state| async move {
        Some((state.next_message().await, state))
    });
    let receiver = state.clone();
    let exchange = exchange_replica_messages(plane, state.id(), outgoing, move |message| {
        receiver.apply(&message, Instant::now());
        if matches!(
            message.update,
            ReplicaUpdate::Prefilled { .. }
                | ReplicaUpdate::Released { .. }
                | ReplicaUpdate::Digest { .. }
        ) {
            router.wake_waiting();
        }
    })
    .await?;
    tokio::spawn(exchange);
    let ticking = state.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(ticking.config().digest_interval);
        loop {
            ticks.tick().await;
            ticking.tick(Instant::now());
        }
    });
    state.join();
    let pool = state.config().pool;
    tracing::info!("{pool} router replica {} shares its state", state.id());
    Ok(())
}
