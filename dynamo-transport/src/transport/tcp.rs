//! The TCP request plane as a [`Transport`].

use std::net::SocketAddr;

use dynamo_core::{BoxEngine, Error};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{Served, Transport};
use crate::tcp::{PlaneTls, RemoteEngine, ServeConfig, serve_with_shutdown};

/// The TCP [`Transport`]: [`serve`](Transport::serve) listens on [`Tcp::bind`]'s address
/// (`127.0.0.1`, any free port, by default) with the [`tcp`](crate::tcp) framed protocol, and
/// [`connect`](Transport::connect) opens [`Tcp::connections`] connections to a `HOST:PORT`.
///
/// ```
/// use dynamo_transport::Tcp;
///
/// let transport = Tcp::new()
///     .bind("127.0.0.1:0".parse().unwrap())
///     .connections(4);
/// ```
#[derive(Debug, Clone)]
pub struct Tcp {
    bind: SocketAddr,
    connections: usize,
    config: ServeConfig,
    shutdown: CancellationToken,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            connections: 1,
            config: ServeConfig::default(),
            shutdown: CancellationToken::new(),
        }
    }
}

impl Tcp {
    /// Serve on 127.0.0.1 (any free port); one connection to each engine reached.
    pub fn new() -> Self {
        Tcp::default()
    }

    /// Where engines are served; port 0 takes any free port. Serving on an unspecified
    /// address (`0.0.0.0`) is refused, since the address is what clients are told.
    pub fn bind(mut self, address: SocketAddr) -> Self {
        self.bind = address;
        self
    }

    /// Connections opened to each engine reached (at least 1), taken in turn by its calls.
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }

    /// How served engines treat their connections (its [`tls`](ServeConfig::tls) is kept if
    /// [`Tcp::tls`] came first).
    pub fn serve_config(mut self, config: ServeConfig) -> Self {
        let tls = self.config.tls.take();
        self.config = config;
        self.config.tls = self.config.tls.take().or(tls);
        self
    }

    /// TLS on both ends: engines are served over TLS and reached over TLS (see [`PlaneTls`]).
    pub fn tls(mut self, tls: PlaneTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// A graceful shutdown for the engines served: once `shutdown` is cancelled they stop
    /// accepting connections, answer new requests `unavailable`, and their
    /// [`serving`](Served::serving) futures resolve when the open streams have ended (see
    /// [`serve_with_shutdown`]).
    pub fn shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl Transport for Tcp {
    type Remote = RemoteEngine;

    async fn serve(&self, engine: BoxEngine) -> Result<Served, Error> {
        if self.bind.ip().is_unspecified() {
            return Err(Error::invalid_request(format!(
                "{} cannot be given to clients: serve on the address they should connect to",
                self.bind.ip()
            )));
        }
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .map_err(|error| {
                Error::unavailable(format!("cannot listen on {}", self.bind)).with_source(error)
            })?;
        let address = listener
            .local_addr()
            .map_err(|error| Error::unavailable("no local address").with_source(error))?;
        let config = self.config.clone();
        let shutdown = self.shutdown.clone();
        let serving = async move {
            serve_with_shutdown(listener, engine, config, shutdown)
                .await
                .map_err(|error| {
                    Error::unavailable(format!("serving on {address} failed")).with_source(error)
                })
        };
        Ok(Served {
            address: address.to_string(),
            serving: serving.boxed(),
        })
    }

    async fn connect(&self, address: &str) -> Result<RemoteEngine, Error> {
        let socket: SocketAddr = address
            .parse()
            .map_err(|_| Error::invalid_request(format!("{address} is not a HOST:PORT address")))?;
        match &self.config.tls {
            Some(tls) => RemoteEngine::connect_tls(socket, self.connections, tls).await,
            None => RemoteEngine::connect_pooled(socket, self.connections).await,
        }
    }

    fn closed(&self, remote: &RemoteEngine) -> BoxFuture<'static, ()> {
        remote.closed().boxed()
    }
}
