//! The event plane across processes: KV events over NATS.
//!
//! Workers publish each [`KvEvent`] as JSON on the subject `{namespace}.kv_events`; a router
//! subscribes and applies them to its index. The NATS client reconnects by itself (and
//! resubscribes), so a restarted NATS server costs the events published while it was down: the
//! index sees the gap in `event_id` and the worker's blocks are resynchronised from there.

use dynamo_core::{Error, KvEvent};
use dynamo_router::SharedIndex;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Why an event could not be taken off the event plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A message on the subject is not a KV event; it is skipped, the others still come.
    #[error("a message on {subject} is not a KV event: {source}")]
    Malformed {
        /// The subject it came on.
        subject: String,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

/// A NATS connection for the KV events of one namespace.
#[derive(Debug, Clone)]
pub struct NatsEvents {
    client: async_nats::Client,
    subject: String,
}

impl NatsEvents {
    /// Connect to the NATS server at `url` (for example `nats://127.0.0.1:4222`).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        let client = async_nats::connect(url).await.map_err(|error| {
            Error::unavailable(format!("cannot connect to NATS at {url}")).with_source(error)
        })?;
        Ok(NatsEvents {
            client,
            subject: format!("{namespace}.kv_events"),
        })
    }

    /// The subject the events travel on.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Publish one event.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the client's outgoing buffer cannot take it.
    pub async fn publish(&self, event: &KvEvent) -> Result<(), Error> {
        let payload = serde_json::to_vec(event)
            .map_err(|error| Error::internal(format!("encoding a KV event: {error}")))?;
        self.client
            .publish(self.subject.clone(), payload.into())
            .await
            .map_err(|error| Error::unavailable("publishing to NATS").with_source(error))
    }

    /// Wait until everything published so far has reached the server.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server does not answer.
    pub async fn flush(&self) -> Result<(), Error> {
        self.client
            .flush()
            .await
            .map_err(|error| Error::unavailable("flushing to NATS").with_source(error))
    }

    /// Publish every event that arrives on `events`, until the channel closes (a worker's
    /// engine writes there). An event NATS refuses is dropped; the subscriber sees the gap.
    pub fn publish_all(&self, mut events: mpsc::Receiver<KvEvent>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let _ = this.publish(&event).await;
            }
        })
    }

    /// The events published from now on, in order per publisher.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the subscription cannot be made.
    pub async fn subscribe(
        &self,
    ) -> Result<impl Stream<Item = Result<KvEvent, EventError>> + Send + 'static, Error> {
        let subscriber = self
            .client
            .subscribe(self.subject.clone())
            .await
            .map_err(|error| Error::unavailable("subscribing on NATS").with_source(error))?;
        Ok(subscriber.map(|message| {
            serde_json::from_slice(&message.payload).map_err(|source| EventError::Malformed {
                subject: message.subject.to_string(),
                source,
            })
        }))
    }

    /// Apply every event published from now on to `index` (a router's), until the subscription
    /// ends. Malformed messages are skipped; the index counts gaps and errors itself.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the subscription cannot be made.
    pub async fn feed(&self, index: SharedIndex) -> Result<JoinHandle<()>, Error> {
        let mut events = Box::pin(self.subscribe().await?);
        Ok(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Ok(event) = event {
                    let _ = index.apply(&event);
                }
            }
        }))
    }
}
