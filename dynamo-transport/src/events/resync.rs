//! Resynchronising a router's index with a worker that lost events: the index asks through a
//! channel, the request crosses the event plane, and the worker answers with a snapshot on its
//! ordinary event stream.

use std::collections::HashMap;
use std::time::Duration;

use dynamo_core::{Error, KvPublisher, ResyncRequest, WorkerId};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{EventPlane, Topic};

impl Topic for ResyncRequest {
    const NAME: &'static str = "kv_resync";
}

/// A worker asked within this long of its last request is not asked again: its snapshot is
/// on its way, and the events after it are what revealed the new gap.
pub const RESYNC_PAUSE: Duration = Duration::from_secs(1);

/// Publish the resync requests a router's index makes (the receiving end of the channel its
/// `ResyncHook` sends on) until the channel closes; spawn the future on your runtime. Requests
/// for one worker are sent at most once per [`RESYNC_PAUSE`]; one the plane refuses is dropped,
/// and the next gap asks again.
pub async fn forward_resyncs<P: EventPlane>(plane: P, mut requests: mpsc::Receiver<ResyncRequest>) {
    let mut last_asked: HashMap<WorkerId, Instant> = HashMap::new();
    while let Some(request) = requests.recv().await {
        let now = Instant::now();
        if last_asked
            .get(&request.worker)
            .is_some_and(|asked| now.duration_since(*asked) < RESYNC_PAUSE)
        {
            continue;
        }
        last_asked.insert(request.worker, now);
        let _ = plane.publish(&request).await;
    }
}

/// Answer every resync request for `publisher`'s worker with a snapshot of its cache
/// ([`KvPublisher::snapshot`]), sent in order with its other events. Subscribes before it
/// returns, so no request made after that is missed; the returned future answers until the
/// subscription ends: spawn it.
///
/// # Errors
///
/// [`Error::Unavailable`] when the subscription cannot be made.
pub async fn answer_resyncs<P: EventPlane>(
    plane: &P,
    publisher: KvPublisher,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let mut requests = plane.subscribe::<ResyncRequest>().await?;
    let worker = publisher.worker();
    Ok(async move {
        while let Some(request) = requests.next().await {
            if let Ok(request) = request
                && request.worker == worker
            {
                tracing::info!(
                    "worker {worker}: events {} to {} were missed; sending a snapshot",
                    request.expected,
                    request.received
                );
                publisher.snapshot();
            }
        }
    })
}
