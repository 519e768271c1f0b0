//! The event plane: KV events and load reports from workers to routers.
//!
//! An [`EventPlane`] carries [`Topic`]s: [`KvEvent`]s, which keep a router's index equal to the
//! workers' caches, [`LoadReport`]s, which tell it how busy each worker is, and
//! [`ResyncRequest`](dynamo_core::ResyncRequest)s, by which a router asks a worker whose events
//! it missed for a snapshot ([`forward_resyncs`], [`answer_resyncs`]), and frontends'
//! [`FrontendTraffic`] for the planner. Two planes:
//!
//! - [`LocalBus`], in process (the default for a single-process deployment): a bounded
//!   broadcast per topic; a subscriber that falls behind by more than its capacity is told how
//!   many messages it missed ([`Error::Lagged`](crate::Error::Lagged)).
//! - `NatsEvents` (feature `nats`), across processes: each topic is the NATS subject
//!   `{namespace}.{topic}`, one JSON message per event. The client reconnects (and
//!   resubscribes) by itself, so a restarted NATS server costs the events published while it
//!   was down: the index sees the gap in `event_id` at the worker's next event, asks it for a
//!   snapshot, and is exact again once the snapshot arrives.
//!
//! Router replicas share their load bookings and predictions as
//! [`ReplicaMessage`](dynamo_core::ReplicaMessage)s on the topic `router_state`
//! ([`exchange_replica_messages`]).
//!
//! [`publish_all`] publishes what an engine writes to its event channel; a subscription is a
//! plain [`Stream`] that a router applies to its index (`dynamo_router::SharedIndex::apply_all`).
//!
//! ```
//! use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
//! use dynamo_transport::events::{EventPlane, LocalBus};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dynamo_core::Error> {
//! let block_size = BlockSize::new(4)?;
//! let bus = LocalBus::new();
//! let mut events = bus.subscribe::<KvEvent>().await?;
//!
//! let event = KvEvent {
//!     worker: WorkerId::new(1),
//!     event_id: 0,
//!     tier: StorageTier::Device,
//!     data: KvEventData::Stored {
//!         parent: None,
//!         block_size,
//!         blocks: BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4]),
//!     },
//! };
//! bus.publish(&event).await?;
//! assert_eq!(events.next().await.unwrap().unwrap(), event);
//! # Ok(())
//! # }
//! ```

mod local;
#[cfg(feature = "nats")]
mod nats;
mod replicas;
mod resync;

use std::future::Future;
use std::pin::Pin;

use dynamo_core::{Error, KvEvent, WorkerId};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use local::LocalBus;
#[cfg(feature = "nats")]
pub use nats::{NatsAccess, NatsEvents, url_without_credentials};
pub use replicas::exchange_replica_messages;
pub use resync::{RESYNC_PAUSE, answer_resyncs, forward_resyncs};

/// A kind of message on the event plane.
pub trait Topic: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Its name: the last part of its NATS subject.
    const NAME: &'static str;
}

impl Topic for KvEvent {
    const NAME: &'static str = "kv_events";
}

/// How busy a worker is, as its process reports it (about once a second).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The worker.
    pub worker: WorkerId,
    /// Requests it is serving (streams open on its request plane).
    pub active_requests: u64,
    /// Requests its engine has queued but not started.
    pub waiting_requests: u64,
    /// KV blocks held by running requests.
    pub kv_blocks_in_use: u64,
    /// KV blocks in its cache.
    pub kv_blocks_total: u64,
    /// Sequences its engine preempted since it started (their KV freed under pressure, to be
    /// recomputed); 0 from a worker that predates the field or whose engine does not say.
    #[serde(default)]
    pub preemptions: u64,
}

impl Topic for LoadReport {
    const NAME: &'static str = "load_metrics";
}

/// A frontend's traffic of the last interval (about a second), for the planner. The id lets a
/// planner that hears several frontends tell which of them went quiet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontendTraffic {
    /// The frontend: a number it draws when it starts.
    pub frontend: u64,
    /// The requests that passed through it.
    pub traffic: dynamo_core::layers::TrafficReport,
    /// Its last report: the frontend is stopping, and a planner need not wait to hear from it
    /// again.
    #[serde(default)]
    pub last: bool,
}

impl Topic for FrontendTraffic {
    const NAME: &'static str = "traffic";
}

/// The messages of one topic, in order per publisher. An error item
/// ([`Error::MalformedMessage`](crate::Error::MalformedMessage),
/// [`Error::Lagged`](crate::Error::Lagged)) does not end the subscription.
pub type Subscription<T> = Pin<Box<dyn Stream<Item = Result<T, crate::Error>> + Send + 'static>>;

/// Somewhere to publish and subscribe to [`Topic`]s.
pub trait EventPlane: Clone + Send + Sync + 'static {
    /// Publish one message.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the plane cannot take it.
    fn publish<T: Topic>(&self, message: &T) -> impl Future<Output = Result<(), Error>> + Send;

    /// The messages of topic `T` published from now on: once this returns, every message
    /// published (from any process) is delivered.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the subscription cannot be made.
    fn subscribe<T: Topic>(&self) -> impl Future<Output = Result<Subscription<T>, Error>> + Send;
}

/// Decode one message of topic `T` as it arrives on `subject` (one JSON document).
///
/// Public (hidden) so that the fuzz targets in `fuzz/` and the corpus replay test reach the
/// decoder that `NatsEvents` subscriptions use.
///
/// # Errors
///
/// [`Error::MalformedMessage`](crate::Error::MalformedMessage) when the payload is not a `T`.
#[doc(hidden)]
pub fn decode_message<T: Topic>(subject: &str, payload: &[u8]) -> Result<T, crate::Error> {
    serde_json::from_slice(payload).map_err(|error| crate::Error::MalformedMessage {
        subject: subject.to_owned(),
        topic: T::NAME,
        source: error.into(),
    })
}

/// Publish every event that arrives on `events` (where a worker's engine writes them), until
/// the channel closes; spawn the future on your runtime. An event the plane refuses is
/// dropped; subscribers see the gap in its worker's event ids.
pub async fn publish_all<P: EventPlane>(plane: P, mut events: mpsc::Receiver<KvEvent>) {
    while let Some(event) = events.recv().await {
        let _ = plane.publish(&event).await;
    }
}
