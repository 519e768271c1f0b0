//! The event plane across processes, over NATS.

use dynamo_core::Error;
use futures::StreamExt;
use tokio::sync::watch;

/// How long the server may take to answer a round trip.
const SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

use super::{EventPlane, Subscription, Topic};

/// A NATS connection for the events of one namespace: topic `T` travels on the subject
/// `{namespace}.{T::NAME}` as JSON.
#[derive(Debug, Clone)]
pub struct NatsEvents {
    client: async_nats::Client,
    namespace: String,
    connected: watch::Receiver<bool>,
}

impl NatsEvents {
    /// Connect to the NATS server at `url` (for example `nats://127.0.0.1:4222`).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        // `connect` returns once connected; the callback reports the changes after that.
        let (state, connected) = watch::channel(true);
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let now = match event {
                    async_nats::Event::Connected => Some(true),
                    async_nats::Event::Disconnected => Some(false),
                    _ => None,
                };
                if let Some(now) = now {
                    // Only changes wake the watchers (the first `Connected` is no change).
                    state.send_if_modified(|connected| std::mem::replace(connected, now) != now);
                }
                async {}
            })
            .connect(url)
            .await
            .map_err(|error| {
                Error::unavailable(format!("cannot connect to NATS at {url}")).with_source(error)
            })?;
        Ok(NatsEvents {
            client,
            namespace: namespace.to_owned(),
            connected,
        })
    }

    /// Whether the client is connected now; [`watch::Receiver::changed`] wakes when it loses
    /// or regains the server. While disconnected, the client reconnects by itself and
    /// publications wait in its buffer.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// The subject topic `T` travels on.
    pub fn subject<T: Topic>(&self) -> String {
        format!("{}.{}", self.namespace, T::NAME)
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
}

impl NatsEvents {
    /// Wait until the server has processed everything this client sent so far (a new
    /// subscription included): a message to a private inbox, sent after it, comes back.
    /// Flushing is not enough: it only writes the bytes, and a publisher on another connection
    /// can reach the server before the subscription does.
    async fn server_caught_up(&self) -> Result<(), Error> {
        let unavailable = |what: &str| Error::unavailable(format!("NATS: {what}"));
        let inbox = self.client.new_inbox();
        let mut probe = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| unavailable("subscribing").with_source(error))?;
        self.client
            .publish(inbox, bytes::Bytes::new())
            .await
            .map_err(|error| unavailable("publishing").with_source(error))?;
        match tokio::time::timeout(SERVER_TIMEOUT, probe.next()).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(unavailable("the server did not answer")),
        }
    }
}

impl EventPlane for NatsEvents {
    async fn publish<T: Topic>(&self, message: &T) -> Result<(), Error> {
        let payload = serde_json::to_vec(message)
            .map_err(|error| Error::internal(format!("encoding a {}: {error}", T::NAME)))?;
        self.client
            .publish(self.subject::<T>(), payload.into())
            .await
            .map_err(|error| Error::unavailable("publishing to NATS").with_source(error))
    }

    async fn subscribe<T: Topic>(&self) -> Result<Subscription<T>, Error> {
        let subscriber = self
            .client
            .subscribe(self.subject::<T>())
            .await
            .map_err(|error| Error::unavailable("subscribing on NATS").with_source(error))?;
        self.server_caught_up().await?;
        Ok(subscriber
            .map(|message| {
                serde_json::from_slice(&message.payload).map_err(|error| {
                    crate::Error::MalformedMessage {
                        subject: message.subject.to_string(),
                        topic: T::NAME,
                        source: error.into(),
                    }
                })
            })
            .boxed())
    }
}
