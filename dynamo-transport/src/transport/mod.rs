//! The request plane as a trait: serve an engine at an address, and reach an engine served
//! elsewhere as an engine of your own.

mod in_process;
mod tcp;

use std::future::Future;

use dynamo_core::{BoxEngine, Engine, Error};
use futures::future::BoxFuture;

pub use in_process::{InProcess, InProcessEngine};
pub use tcp::Tcp;

/// How engines reach each other.
///
/// A worker [`serve`](Transport::serve)s its engine and registers the address it gets (see
/// [`discovery`](crate::discovery)); a router [`connect`](Transport::connect)s to each address
/// and routes to the engine it gets back, which fails with
/// [`Error::Unavailable`](dynamo_core::Error::Unavailable) once
/// [`closed`](Transport::closed) has fired. Two implementations, chosen without changing the
/// code that uses the trait:
///
/// | transport | addresses | for |
/// |---|---|---|
/// | [`InProcess`] | `in-process/N`, within one process | one process, no sockets (the default deployment) |
/// | [`Tcp`] | `HOST:PORT` | across processes and machines ([`tcp`](crate::tcp)'s framed protocol) |
///
/// ```
/// use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
/// use dynamo_transport::{InProcess, Tcp, Transport};
///
/// /// Serve an echo engine on `transport` and call it back through the same transport.
/// async fn round_trip(transport: impl Transport) -> Result<Vec<u32>, dynamo_core::Error> {
///     let served = transport.serve(EchoEngine::new().boxed_engine()).await?;
///     tokio::spawn(served.serving);
///     let mut engine = transport.connect(&served.address).await?;
///     let request = GenerateRequest::new("r1", "echo", vec![7, 8, 9]).with_max_tokens(2);
///     Ok(engine.generate_all(request).await?.tokens)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// assert_eq!(round_trip(InProcess::new()).await?, [7, 8]);
/// assert_eq!(round_trip(Tcp::new()).await?, [7, 8]);
/// # Ok(())
/// # }
/// ```
pub trait Transport: Clone + Send + Sync + 'static {
    /// An engine reached through this transport.
    type Remote: Engine<Future: Send> + Clone + Send + Sync + 'static;

    /// Serve `engine`: the address where it is reached, and the future that serves it.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the engine cannot be served (an address in use, say).
    fn serve(&self, engine: BoxEngine) -> impl Future<Output = Result<Served, Error>> + Send;

    /// An engine for the one served at `address`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for an address this transport cannot read, and
    /// [`Error::Unavailable`] when nothing answers there.
    fn connect(&self, address: &str) -> impl Future<Output = Result<Self::Remote, Error>> + Send;

    /// Resolves when `remote` has lost its engine (its connection dropped, the engine stopped
    /// being served); holds no handle that keeps it open.
    fn closed(&self, remote: &Self::Remote) -> BoxFuture<'static, ()>;
}

/// An engine being served.
pub struct Served {
    /// Where clients reach it ([`Transport::connect`]).
    pub address: String,
    /// Serves it until dropped (spawn it on your runtime); dropping it stops serving and ends
    /// the generations in flight. It resolves only if serving fails, or once a graceful
    /// shutdown the transport offers has ended (see [`Tcp::shutdown`](crate::Tcp::shutdown)).
    pub serving: BoxFuture<'static, Result<(), Error>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}
