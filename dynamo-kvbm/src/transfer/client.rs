//! [`TcpFetch`]: a decode worker pulling KV blocks from prefill workers' block servers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dynamo_core::{KvHandoff, SequenceHash};
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::landing::{Landing, Reservation};
use super::wire::{self, ANSWER_HEADER, Answer, Op, Request, Status};
use super::{BlockStream, Fetched, KvFetch, SocketWrap};
use crate::Error;

/// How a [`TcpFetch`] pulls.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TcpFetchConfig {
    /// The size of every block, in bytes: the prefill workers' must be the same.
    pub block_bytes: usize,
    /// Blocks the landing store holds, across all pulls in flight. A pull takes room for the
    /// leading blocks of its transfer that fit and pulls only those.
    pub landing_blocks: usize,
    /// How long a pull (or a release) may take, connecting included; past it, the pull is an
    /// [`Error::TransferTimeout`]. Default 5 s.
    pub deadline: Duration,
    /// Block bytes asked for per request (at least one block). Default 4 MiB; the block
    /// server's [`max_request_bytes`](super::BlockServerConfig::max_request_bytes) must allow
    /// it.
    pub request_bytes: usize,
    /// Requests in flight on a connection: the flow-control window. Default 4.
    pub window: usize,
    /// Idle connections kept per block server, for the next pull; more are closed. Default 4.
    pub idle_connections: usize,
    /// Block servers whose idle connections are kept; connections to further ones are closed
    /// after use. Default 64.
    pub idle_servers: usize,
    /// What every connection is wrapped in before the protocol runs (TLS); none by default. It
    /// must match the block servers' [`wrap`](super::BlockServerConfig::wrap).
    pub wrap: Option<Arc<dyn SocketWrap>>,
}

impl TcpFetchConfig {
    /// Pulls of `block_bytes` blocks into a landing store of `landing_blocks`, with the default
    /// deadline, request size, window and pool.
    pub fn new(block_bytes: usize, landing_blocks: usize) -> Self {
        TcpFetchConfig {
            block_bytes,
            landing_blocks,
            deadline: Duration::from_secs(5),
            request_bytes: 4 << 20,
            window: 4,
            idle_connections: 4,
            idle_servers: 64,
            wrap: None,
        }
    }
}

/// Pulls a hand-over's blocks from the prefill worker's block server
/// ([`serve_exports`](super::serve_exports)) at [`KvHandoff::address`] into a bounded landing
/// store of host memory, then releases them there.
///
/// A pull asks for a few blocks per request and keeps [`window`](TcpFetchConfig::window)
/// requests in flight on one connection; each block is read from the socket straight into its
/// landing buffer. [`Fetched::store`] is the landing store, holding the pulled blocks until the
/// [`Fetched`] is dropped. A pull that does not finish within the deadline, or whose
/// connection fails, is an error, and the decode worker computes the blocks itself.
///
/// Connections are kept per block server and reused; a pull that fails on a reused connection
/// is tried once more on a new one.
///
/// Clones share the landing store and the connections.
#[derive(Clone)]
pub struct TcpFetch {
    inner: Arc<Inner>,
}

struct Inner {
    config: TcpFetchConfig,
    landing: Arc<Landing>,
    idle: Mutex<HashMap<String, Vec<Connection>>>,
}

/// A connection to a block server, wrapped if the config says so.
type Connection = Box<dyn BlockStream>;

impl TcpFetch {
    /// A client with its landing store allocated.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the block size is zero or the landing store would not fit the
    /// address space.
    pub fn new(config: TcpFetchConfig) -> Result<Self, Error> {
        let landing = Arc::new(Landing::new(config.block_bytes, config.landing_blocks)?);
        Ok(TcpFetch {
            inner: Arc::new(Inner {
                config,
                landing,
                idle: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many landing blocks pulls in flight or not yet dropped [`Fetched`]s hold.
    pub fn landing_in_use(&self) -> usize {
        self.inner.landing.reserved()
    }

    /// The configuration.
    pub fn config(&self) -> &TcpFetchConfig {
        &self.inner.config
    }

    /// Ask the block server at `address` to stage the leading `hashes` of `transfer` in its
    /// NIXL slab; `None` when it serves no NIXL. On an I/O failure of a reused connection, once
    /// more on a new one.
    #[cfg(feature = "nixl")]
    pub(crate) async fn stage(
        &self,
        address: &str,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<Option<Staged>, Error> {
        let mut fresh = false;
        loop {
            let (mut connection, reused) = self.inner.connect(address, fresh).await?;
            match self
                .inner
                .stage_on(&mut connection, address, transfer, hashes)
                .await
            {
                Ok(staged) => {
                    if staged.is_some() {
                        self.inner.keep(address, connection);
                    }
                    return Ok(staged);
                }
                Err(Error::Transfer { .. }) if reused => fresh = true,
                Err(error) => return Err(error),
            }
        }
    }
}

/// What a block server staged for a NIXL READ.
#[cfg(feature = "nixl")]
#[derive(Debug)]
pub(crate) struct Staged {
    /// The server agent's metadata, to load.
    pub(crate) metadata: Vec<u8>,
    /// The address of each staged block (the leading ones asked for).
    pub(crate) addresses: Vec<u64>,
}

impl KvFetch for TcpFetch {
    /// Pull the leading blocks that fit the landing store.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future closes its connection and gives its landing room back; the source
    /// keeps the transfer until it is released or expires.
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>> {
        let inner = self.inner.clone();
        let Some(address) = handoff.address.clone() else {
            let worker = handoff.source;
            return async move { Err(Error::NoRoute { worker }) }.boxed();
        };
        let reservation = inner.landing.reserve(&handoff.blocks);
        let transfer = handoff.transfer;
        async move {
            let after = inner.config.deadline;
            let pulled = tokio::time::timeout(after, inner.pull(&address, transfer, reservation));
            pulled
                .await
                .unwrap_or(Err(Error::TransferTimeout { address, after }))
        }
        .boxed()
    }

    /// Tell the block server the transfer is done; failures are ignored (the lease ends it).
    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        let address = handoff.address.clone();
        let transfer = handoff.transfer;
        async move {
            let Some(address) = address else { return };
            let deadline = inner.config.deadline;
            match tokio::time::timeout(deadline, inner.release(&address, transfer)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%address, transfer, %error, "KV transfer release failed");
                }
                Err(_) => tracing::debug!(%address, transfer, "KV transfer release timed out"),
            }
        }
        .boxed()
    }
}

impl Inner {
    /// Pull the reserved blocks; on an I/O failure of a reused connection, once more on a new
    /// one.
    async fn pull(
        &self,
        address: &str,
        transfer: u64,
        mut reservation: Reservation,
    ) -> Result<Fetched, Error> {
        let store = self.landing.store();
        if reservation.hashes().is_empty() {
            return Ok(Fetched::on_shelf(store, 0));
        }
        let mut fresh = false;
        let found = loop {
            let (mut connection, reused) = self.connect(address, fresh).await?;
            match self
                .pull_on(&mut connection, address, transfer, reservation.hashes())
                .await
            {
                Ok((found, clean)) => {
                    if clean {
                        self.keep(address, connection);
                    }
                    break found;
                }
                Err(Error::Transfer { .. }) if reused => fresh = true,
                Err(error) => return Err(error),
            }
        };
        reservation.truncate(found);
        Ok(Fetched::landed(store, reservation))
    }

    /// Pull `hashes` of `transfer` on one connection into the landing store: how many leading
    /// ones came, and whether the connection has no answer pending.
    async fn pull_on(
        &self,
        connection: &mut Connection,
        address: &str,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<(usize, bool), Error> {
        let io = io_error(address);
        let size = self.config.block_bytes;
        let chunks: Vec<&[SequenceHash]> = hashes
            .chunks(wire::blocks_per_request(self.config.request_bytes, size))
            .collect();
        let mut request = Vec::new();
        let (mut sent, mut found) = (0, 0);
        for (received, chunk) in chunks.iter().enumerate() {
            request.clear();
            while sent < chunks.len() && sent - received < self.config.window.max(1) {
                Request::encode(Op::Fetch, transfer, chunks[sent], &mut request);
                sent += 1;
            }
            // A wrap (TLS) may hold written bytes until flushed.
            connection.write_all(&request).await.map_err(io)?;
            connection.flush().await.map_err(io)?;
            let answer = read_answer(connection, address).await?;
            let came = self.check(answer, address, transfer, chunk.len())?;
            // Straight from the socket into the block's own buffer.
            for &hash in &chunk[..came] {
                let mut block = self.landing.buffer();
                connection.read_exact(&mut block).await.map_err(io)?;
                self.landing.place(hash, block.freeze());
            }
            found += came;
            if came < chunk.len() {
                return Ok((found, sent == received + 1));
            }
        }
        Ok((found, true))
    }

    /// The blocks an answer to a fetch of `asked` blocks carries, or why it carries none.
    fn check(
        &self,
        answer: Answer,
        address: &str,
        transfer: u64,
        asked: usize,
    ) -> Result<usize, Error> {
        let protocol = |reason: String| Error::Protocol {
            address: address.to_owned(),
            reason,
        };
        if answer.block_bytes as usize != self.config.block_bytes {
            return Err(protocol(format!(
                "the server's blocks are {} bytes, ours {}",
                answer.block_bytes, self.config.block_bytes
            )));
        }
        match answer.status {
            Status::Ok if answer.found as usize <= asked => Ok(answer.found as usize),
            Status::Ok => Err(protocol(format!(
                "{} blocks sent for {asked} asked",
                answer.found
            ))),
            Status::UnknownTransfer => Err(Error::UnknownTransfer { transfer }),
            Status::TooLarge => Err(protocol(format!(
                "the server sends at most {} blocks per request; lower request_bytes",
                answer.found
            ))),
            Status::Malformed => Err(protocol("the server could not serve the request".into())),
            Status::Unsupported => Err(protocol("the server does not serve this request".into())),
        }
    }

    /// One stage request and its answer on `connection`.
    #[cfg(feature = "nixl")]
    async fn stage_on(
        &self,
        connection: &mut Connection,
        address: &str,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<Option<Staged>, Error> {
        let io = io_error(address);
        let mut request = Vec::new();
        Request::encode(Op::Stage, transfer, hashes, &mut request);
        connection.write_all(&request).await.map_err(io)?;
        connection.flush().await.map_err(io)?;
        let answer = read_answer(connection, address).await?;
        if matches!(answer.status, Status::Unsupported | Status::Malformed) {
            return Ok(None);
        }
        let found = self.check(answer, address, transfer, hashes.len())?;
        match wire::read_staged(connection, found).await.map_err(io)? {
            Some((metadata, addresses)) => Ok(Some(Staged {
                metadata,
                addresses,
            })),
            None => Err(Error::Protocol {
                address: address.to_owned(),
                reason: "NIXL metadata longer than 1 MiB".into(),
            }),
        }
    }

    async fn release(&self, address: &str, transfer: u64) -> Result<(), Error> {
        let (mut connection, _) = self.connect(address, false).await?;
        let mut request = Vec::new();
        Request::encode(Op::Release, transfer, &[], &mut request);
        let io = io_error(address);
        connection.write_all(&request).await.map_err(io)?;
        connection.flush().await.map_err(io)?;
        read_answer(&mut connection, address).await?;
        self.keep(address, connection);
        Ok(())
    }

    /// An idle connection to `address` (unless `fresh`), or a new one; whether it was reused.
    async fn connect(&self, address: &str, fresh: bool) -> Result<(Connection, bool), Error> {
        if !fresh {
            let idle = self.idle.lock().get_mut(address).and_then(Vec::pop);
            if let Some(connection) = idle {
                return Ok((connection, true));
            }
        }
        let socket = TcpStream::connect(address)
            .await
            .map_err(io_error(address))?;
        let _ = socket.set_nodelay(true);
        let connection: Connection = match &self.config.wrap {
            None => Box::new(socket),
            Some(wrap) => wrap.client(socket).await.map_err(io_error(address))?,
        };
        Ok((connection, false))
    }

    /// Keep a connection with no answer pending for the next pull, if the pool has room.
    fn keep(&self, address: &str, connection: Connection) {
        let mut idle = self.idle.lock();
        idle.retain(|_, connections| !connections.is_empty());
        if !idle.contains_key(address) && idle.len() >= self.config.idle_servers {
            return;
        }
        let connections = idle.entry(address.to_owned()).or_default();
        if connections.len() < self.config.idle_connections {
            connections.push(connection);
        }
    }
}

/// [`Error::Transfer`] with `address`.
fn io_error(address: &str) -> impl Fn(std::io::Error) -> Error + Copy + '_ {
    move |source| Error::Transfer {
        address: address.to_owned(),
        source,
    }
}

async fn read_answer<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    address: &str,
) -> Result<Answer, Error> {
    let mut header = [0; ANSWER_HEADER];
    reader
        .read_exact(&mut header)
        .await
        .map_err(io_error(address))?;
    Answer::decode(header).ok_or_else(|| Error::Protocol {
        address: address.to_owned(),
        reason: "an answer that is not a block server's".into(),
    })
}

impl fmt::Debug for TcpFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpFetch")
            .field("config", &self.inner.config)
            .field("landing", &self.inner.landing)
            .finish_non_exhaustive()
    }
}
