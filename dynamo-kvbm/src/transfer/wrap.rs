//! [`SocketWrap`]: a layer (TLS, for one) over the block protocol's TCP connections.

use std::fmt;
use std::io;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connection the block protocol runs on: a TCP socket, or one wrapped by a [`SocketWrap`].
pub trait BlockStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> BlockStream for T {}

/// Wraps the block protocol's connections on both sides, before the first byte of it: the seam
/// where a deployment puts TLS (dynamo-serve wraps them with its request plane's
/// `dynamo_transport::tcp::PlaneTls`, so one authority secures both).
///
/// A wrap that fails (a refused certificate, a handshake that takes too long) closes the
/// connection: the block server serves nothing on it, and the pull is an
/// [`Error::Transfer`](crate::Error::Transfer), so the decode worker computes the prompt.
///
/// # Example
///
/// A wrap that only counts connections:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use dynamo_kvbm::transfer::{BlockStream, SocketWrap};
/// use futures::FutureExt;
/// use futures::future::BoxFuture;
/// use tokio::net::TcpStream;
///
/// #[derive(Debug, Default)]
/// struct Counted(AtomicUsize);
///
/// impl SocketWrap for Counted {
///     fn server(&self, socket: TcpStream) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         async move { Ok(Box::new(socket) as Box<dyn BlockStream>) }.boxed()
///     }
///     fn client(&self, socket: TcpStream) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
///         self.server(socket)
///     }
/// }
/// ```
pub trait SocketWrap: Send + Sync + fmt::Debug {
    /// The block server's side of a connection it accepted.
    fn server(&self, socket: TcpStream) -> BoxFuture<'static, io::Result<Box<dyn BlockStream>>>;

    /// A puller's side of a connection it opened to a block server (the server's address is
    /// the socket's peer address).
    fn client(&self, socket: TcpStream) -> BoxFuture<'static, io::Result<Box<dyn BlockStream>>>;
}
