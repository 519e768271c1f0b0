//! The event plane across processes, over NATS.

use std::path::PathBuf;

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

/// How to reach a NATS server that asks for credentials or TLS, beyond what its URL says.
///
/// A user and password, or a token, go in the URL as NATS clients expect
/// (`nats://USER:PASSWORD@HOST:PORT`, `nats://TOKEN@HOST:PORT`); they are never written in an
/// error or a log line. A `tls://` URL, or a server that requires TLS, makes the connection
/// TLS; the server's certificate is checked against the system's roots plus
/// [`root_certificate`](Self::root_certificate).
#[derive(Debug, Clone, Default)]
pub struct NatsAccess {
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes for decentralised auth.
    pub credentials_file: Option<PathBuf>,
    /// A PEM certificate authority to trust for the server's certificate.
    pub root_certificate: Option<PathBuf>,
    /// A client certificate and its key (PEM), for a server that verifies clients.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Refuse to connect without TLS.
    pub require_tls: bool,
}

impl NatsEvents {
    /// Connect to the NATS server at `url` (for example `nats://127.0.0.1:4222`).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        Self::connect_with(url, namespace, &NatsAccess::default()).await
    }

    /// [`connect`](Self::connect), with credentials or TLS.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the server cannot be reached or refuses the credentials,
    /// and [`Error::InvalidRequest`](dynamo_core::ErrorClass::InvalidRequest) when the
    /// credentials file cannot be read.
    pub async fn connect_with(
        url: &str,
        namespace: &str,
        access: &NatsAccess,
    ) -> Result<Self, Error> {
        // `connect` returns once connected; the callback reports the changes after that.
        let (state, connected) = watch::channel(true);
        let mut options = async_nats::ConnectOptions::new()
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
            .require_tls(access.require_tls);
        if let Some(file) = &access.credentials_file {
            options = options.credentials_file(file).await.map_err(|error| {
                Error::invalid_request(format!(
                    "cannot use the NATS credentials file {}",
                    file.display()
                ))
                .with_source(error)
            })?;
        }
        if let Some(authority) = &access.root_certificate {
            options = options.add_root_certificates(authority.clone());
        }
        if let Some((certificate, key)) = &access.client_certificate {
            options = options.add_client_certificate(certificate.clone(), key.clone());
        }
        // async-nats reads no credentials from the URL: they are taken out and given to it.
        let (servers, credentials) = split_credentials(url);
        options = match credentials.as_deref().map(|given| given.split_once(':')) {
            Some(Some((user, password))) => {
                options.user_and_password(user.to_owned(), password.to_owned())
            }
            Some(None) => options.token(credentials.unwrap_or_default()),
            None => options,
        };
        let client = options.connect(servers.as_str()).await.map_err(|error| {
            Error::unavailable(format!("cannot connect to NATS at {servers}")).with_source(error)
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

    /// The same connection, publishing and subscribing under `part` within this namespace
    /// (`NAMESPACE.part.TOPIC`): a plane of its own for messages that must not reach the
    /// namespace's own subscribers, such as the state of one worker pool's router replicas.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), dynamo_core::Error> {
    /// use dynamo_core::ReplicaMessage;
    /// use dynamo_transport::events::NatsEvents;
    ///
    /// let nats = NatsEvents::connect("nats://127.0.0.1:4222", "dynamo").await?;
    /// let prefill = nats.within("prefill");
    /// assert_eq!(prefill.subject::<ReplicaMessage>(), "dynamo.prefill.router_state");
    /// # Ok(())
    /// # }
    /// ```
    pub fn within(&self, part: &str) -> NatsEvents {
        NatsEvents {
            client: self.client.clone(),
            namespace: format!("{}.{part}", self.namespace),
            connected: self.connected.clone(),
        }
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
            .map(|message| super::decode_message(&message.subject, &message.payload))
            .boxed())
    }
}

/// `url` without the user, password or token it may carry, for messages and for the
/// connection itself; and what it carried (`USER:PASSWORD` or `TOKEN`).
fn split_credentials(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    // Each of a comma-separated list of servers may carry some; the first found is used.
    let mut found = None;
    let servers: Vec<&str> = rest
        .split(',')
        .map(|server| match server.rsplit_once('@') {
            Some((credentials, host)) => {
                found.get_or_insert_with(|| credentials.to_owned());
                host
            }
            None => server,
        })
        .collect();
    (format!("{scheme}://{}", servers.join(",")), found)
}

/// `url` without the user, password or token it may carry.
pub fn url_without_credentials(url: &str) -> String {
    split_credentials(url).0
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        let plain = "nats://127.0.0.1:4222";
        assert_eq!(split_credentials(plain), (plain.to_owned(), None));
        assert_eq!(
            split_credentials("nats://dyn:s3cret@10.0.0.1:4222"),
            (
                "nats://10.0.0.1:4222".to_owned(),
                Some("dyn:s3cret".to_owned())
            )
        );
        assert_eq!(
            split_credentials("tls://tok3n@a:4222,tls://b:4222"),
            (
                "tls://a:4222,tls://b:4222".to_owned(),
                Some("tok3n".to_owned())
            )
        );
        assert_eq!(
            split_credentials("nats-server"),
            ("nats-server".to_owned(), None)
        );
    }
}
