//! An engine on the other end of a TCP connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use dynamo_core::{Error, GenerateRequest, TokenChunk, TokenStream};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::frame::{DEFAULT_MAX_FRAME, Frame, encode_frame, read_frame, write_frames};
use super::tls::PlaneTls;

/// Chunks buffered per stream before the connection's reader waits for the stream's consumer.
const STREAM_BUFFER: usize = 256;
/// Frames waiting to be written on the connection.
const WRITE_QUEUE: usize = 1024;

type ChunkSender = mpsc::Sender<Result<TokenChunk, Error>>;

/// What the streams of one connection share.
#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    frames: mpsc::Sender<Vec<u8>>,
    /// Open streams; `None` once the connection is lost.
    streams: Mutex<Option<HashMap<u64, ChunkSender>>>,
    next_stream: AtomicU64,
    max_frame: u32,
    /// Cancelled when the connection is lost.
    closed: CancellationToken,
}

impl Connection {
    fn lost(&self) -> Error {
        Error::unavailable(format!("the connection to {} was lost", self.peer))
    }

    /// End every open stream with "unavailable"; later calls fail at once.
    fn fail_all(&self) {
        self.closed.cancel();
        let streams = self.streams.lock().take().unwrap_or_default();
        for (_, sender) in streams {
            let _ = sender.try_send(Err(self.lost()));
        }
    }
}

/// An [`Engine`](dynamo_core::Engine) served by [`serve`](super::serve) on another process.
///
/// Every clone shares its connections: one by default ([`connect`](Self::connect)), or a pool
/// of several ([`connect_pooled`](Self::connect_pooled)) that calls take in turn, so that a
/// slow stream holds up only the streams on its own connection. Streams are multiplexed over
/// each connection. When a connection is lost, every open stream on it ends with
/// [`Error::Unavailable`], and so does every later call that it would take: connect again
/// ([`discovery::connect`](crate::discovery::connect) does that for a router's workers).
///
/// The connections close when the last clone, and the last stream it returned, are dropped.
#[derive(Debug, Clone)]
pub struct RemoteEngine {
    pool: Arc<Pool>,
}

/// The connections of a [`RemoteEngine`] and its clones.
#[derive(Debug)]
struct Pool {
    connections: Vec<Arc<Connection>>,
    next: AtomicUsize,
    /// Cancelled when any connection is lost.
    closed: CancellationToken,
    /// Cancelled when the pool is dropped: the connections' tasks end and close their sockets.
    shutdown: CancellationToken,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl RemoteEngine {
    /// Connect to an engine served at `address`.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the connection cannot be made.
    pub async fn connect(address: SocketAddr) -> Result<Self, Error> {
        Self::connect_pooled(address, 1).await
    }

    /// Open `connections` connections (at least one) to the engine served at `address`.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when a connection cannot be made.
    pub async fn connect_pooled(address: SocketAddr, connections: usize) -> Result<Self, Error> {
        Self::open_pool(address, connections, None).await
    }

    /// [`connect_pooled`](Self::connect_pooled) over TLS: the worker must present a
    /// certificate signed by `tls`'s authority for its address (or for
    /// [`PlaneTls::verify_name`]'s name), and is shown this process's certificate.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when a connection cannot be made or its handshake fails.
    pub async fn connect_tls(
        address: SocketAddr,
        connections: usize,
        tls: &PlaneTls,
    ) -> Result<Self, Error> {
        Self::open_pool(address, connections, Some(tls)).await
    }

    async fn open_pool(
        address: SocketAddr,
        connections: usize,
        tls: Option<&PlaneTls>,
    ) -> Result<Self, Error> {
        let mut pool = Pool {
            connections: Vec::with_capacity(connections.max(1)),
            next: AtomicUsize::new(0),
            closed: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        };
        // On an error, dropping the pool closes the connections opened so far.
        for _ in 0..connections.max(1) {
            let connection =
                Connection::open(address, tls, pool.closed.clone(), pool.shutdown.clone()).await?;
            pool.connections.push(connection);
        }
        Ok(RemoteEngine {
            pool: Arc::new(pool),
        })
    }

    /// Wait until a connection is lost (at once if one already is). The future holds no
    /// handle to the engine, so waiting on it keeps no connection open.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.pool.closed.clone().cancelled_owned()
    }

    /// Whether a connection is lost.
    pub fn is_closed(&self) -> bool {
        self.pool.closed.is_cancelled()
    }
}

impl Connection {
    /// Connect, and start the connection's reader and writer; `closed` is cancelled when it
    /// is lost, and `shutdown` closes it.
    async fn open(
        address: SocketAddr,
        tls: Option<&PlaneTls>,
        closed: CancellationToken,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let socket = TcpStream::connect(address).await.map_err(|error| {
            Error::unavailable(format!("cannot connect to {address}")).with_source(error)
        })?;
        let _ = socket.set_nodelay(true);
        let Some(tls) = tls else {
            let (reader, writer) = socket.into_split();
            return Ok(Self::start(address, reader, writer, closed, shutdown));
        };
        let stream = tls.connect(address, socket).await.map_err(|error| {
            Error::unavailable(format!("the TLS handshake with {address} failed"))
                .with_source(error)
        })?;
        let (reader, writer) = tokio::io::split(stream);
        Ok(Self::start(address, reader, writer, closed, shutdown))
    }

    /// Start the connection's reader and writer tasks.
    fn start(
        address: SocketAddr,
        mut reader: impl AsyncRead + Unpin + Send + 'static,
        mut writer: impl AsyncWrite + Unpin + Send + 'static,
        closed: CancellationToken,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let connection = Arc::new(Connection {
            peer: address,
            frames,
            streams: Mutex::new(Some(HashMap::new())),
            next_stream: AtomicU64::new(1),
            max_frame: DEFAULT_MAX_FRAME,
            closed,
        });
        let writing = Arc::clone(&connection);
        let writer_shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = write_frames(&mut writer, &mut outgoing) => {}
                () = writer_shutdown.cancelled() => {}
            }
            writing.fail_all();
        });
        let reading = Arc::clone(&connection);
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut reader, reading.max_frame) => frame,
                    () = shutdown.cancelled() => break,
                };
                match frame {
                    Ok(Some(Frame::Chunk { stream, chunk })) => {
                        let last = chunk.is_final();
                        reading.deliver(stream, Ok(chunk), last).await;
                    }
                    Ok(Some(Frame::Error { stream, error })) => {
                        reading.deliver(stream, Err(error.into()), true).await;
                    }
                    // Requests and cancels are not for a client; a bad frame concerns no
                    // stream we can name. Neither stops the others.
                    Ok(Some(_)) => {}
                    Err(error) if error.is_recoverable() => {}
                    Ok(None) | Err(_) => break,
                }
            }
            reading.fail_all();
        });
        connection
    }

    /// Hand a chunk to its stream (waiting if the stream's buffer is full); forget the stream
    /// after its last chunk.
    async fn deliver(&self, stream: u64, item: Result<TokenChunk, Error>, last: bool) {
        let sender = {
            let mut streams = self.streams.lock();
            let Some(streams) = streams.as_mut() else {
                return;
            };
            if last {
                streams.remove(&stream)
            } else {
                streams.get(&stream).cloned()
            }
        };
        if let Some(sender) = sender {
            let _ = sender.send(item).await;
        }
    }
}

impl Service<GenerateRequest> for RemoteEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<TokenStream, Error>> + Send>>;

    /// Ready while every connection is up; once one is lost the engine has failed for good
    /// ([`Error::Unavailable`]): connect again.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self
            .pool
            .connections
            .iter()
            .find(|c| c.closed.is_cancelled())
        {
            Some(lost) => Poll::Ready(Err(lost.lost())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let pool = Arc::clone(&self.pool);
        Box::pin(async move {
            let turn = pool.next.fetch_add(1, Ordering::Relaxed) % pool.connections.len();
            let connection = Arc::clone(&pool.connections[turn]);
            let stream = connection.next_stream.fetch_add(1, Ordering::Relaxed);
            let cancel = request.cancellation().child_token();
            let bytes = encode_frame(
                &Frame::Request {
                    stream,
                    request: Box::new(request),
                },
                connection.max_frame,
            )
            .map_err(|error| Error::invalid_request(error.to_string()))?;
            let (sender, chunks) = mpsc::channel(STREAM_BUFFER);
            match connection.streams.lock().as_mut() {
                Some(streams) => streams.insert(stream, sender),
                None => return Err(connection.lost()),
            };
            if connection.frames.send(bytes).await.is_err() {
                return Err(connection.lost());
            }
            // Dropping the stream (or cancelling the request) cancels the remote generation.
            let watcher = Arc::clone(&connection);
            let watched = cancel.clone();
            tokio::spawn(async move {
                watched.cancelled().await;
                let open = watcher
                    .streams
                    .lock()
                    .as_mut()
                    .and_then(|streams| streams.remove(&stream))
                    .is_some();
                if open
                    && let Ok(bytes) = encode_frame(&Frame::Cancel { stream }, watcher.max_frame)
                {
                    let _ = watcher.frames.send(bytes).await;
                }
            });
            // The stream keeps the pool, and so its connection, open until it is dropped.
            let chunks = futures::stream::unfold((chunks, pool), |(mut chunks, pool)| async move {
                let chunk = chunks.recv().await?;
                Some((chunk, (chunks, pool)))
            });
            Ok(TokenStream::new(chunks, cancel))
        })
    }
}
