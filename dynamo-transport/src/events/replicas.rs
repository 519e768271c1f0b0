//! Router replicas' shared state on the event plane: every replica publishes its
//! [`ReplicaMessage`]s on one topic and applies the others'.

use std::future::Future;

use dynamo_core::{Error, ReplicaId, ReplicaMessage};
use futures::{Stream, StreamExt};

use super::{EventPlane, Topic};

impl Topic for ReplicaMessage {
    const NAME: &'static str = "router_state";
}

/// Carry router replica `replica`'s messages over `plane`: publish each message `outgoing`
/// yields, and hand every message of another replica to `incoming`.
///
/// Subscribes before it returns, so that a replica can ask for a snapshot right after and hear
/// the answers; the returned future runs until the subscription ends: spawn it. A message the
/// plane refuses is dropped (the next digest repairs it), and so is one that does not parse or
/// was lost to a lagging subscription.
///
/// With `dynamo_router::replicas::ReplicaState`, `outgoing` is a stream of its
/// `next_message`, `incoming` calls its `apply`, and a timer calls its `tick` every digest
/// interval (`dynamo-serve`'s frontend does this).
///
/// # Errors
///
/// [`Error::Unavailable`] when the subscription cannot be made.
pub async fn exchange_replica_messages<P, S, F>(
    plane: &P,
    replica: ReplicaId,
    outgoing: S,
    mut incoming: F,
) -> Result<impl Future<Output = ()> + Send + 'static, Error>
where
    P: EventPlane,
    S: Stream<Item = ReplicaMessage> + Send + 'static,
    F: FnMut(ReplicaMessage) + Send + 'static,
{
    let mut received = plane.subscribe::<ReplicaMessage>().await?;
    let plane = plane.clone();
    Ok(async move {
        let publish = async move {
            let mut outgoing = std::pin::pin!(outgoing);
            while let Some(message) = outgoing.next().await {
                if let Err(error) = plane.publish(&message).await {
                    tracing::debug!("router state not published: {error}");
                }
            }
        };
        let apply = async move {
            while let Some(message) = received.next().await {
                match message {
                    Ok(message) if message.replica != replica => incoming(message),
                    Ok(_own) => {}
                    Err(error) => tracing::debug!("router state message skipped: {error}"),
                }
            }
        };
        futures::future::join(publish, apply).await;
    })
}
