//! The block server: a prefill worker's [`KvExports`] answering pulls over TCP.

use std::io;
use std::sync::Arc;

use dynamo_core::SequenceHash;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::wire::{ANSWER_HEADER, Answer, Op, REQUEST_HEADER, Request, Status, read_hashes};
use super::{KvExports, SocketWrap, wire};
use crate::Error;

/// How a block server bounds its work.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockServerConfig {
    /// The most block bytes one request may ask for (at least one block is always allowed). The
    /// server sends blocks straight from the exports, holding at most this much of them per
    /// connection (blocks released meanwhile stay in memory until sent). A larger request is
    /// refused with the limit, and the client reports it. Default 16 MiB.
    pub max_request_bytes: usize,
    /// Connections served at once; further ones wait in the listener's backlog. Default 64.
    pub max_connections: usize,
    /// What every accepted connection is wrapped in before the protocol runs (TLS); none by
    /// default. A connection whose wrap fails is closed.
    pub wrap: Option<Arc<dyn SocketWrap>>,
    /// Where blocks are staged for decode workers that READ them over NIXL
    /// ([`NixlFetch`](super::NixlFetch)); none by default, and then such a request is answered
    /// "unsupported" and the decode worker pulls over TCP.
    #[cfg(feature = "nixl")]
    pub nixl: Option<Arc<super::NixlSource>>,
}

/// The most hashes a stage request may list (512 KiB of them).
const MAX_STAGED_HASHES: usize = 1 << 16;

/// What a connection stages NIXL READs in.
#[cfg(feature = "nixl")]
type Nixl = Option<Arc<super::NixlSource>>;
#[cfg(not(feature = "nixl"))]
type Nixl = NoNixl;

/// No NIXL to stage in (without the `nixl` feature).
#[cfg(not(feature = "nixl"))]
#[derive(Debug, Clone)]
struct NoNixl;

impl Default for BlockServerConfig {
    fn default() -> Self {
        BlockServerConfig {
            max_request_bytes: 16 << 20,
            max_connections: 64,
            wrap: None,
            #[cfg(feature = "nixl")]
            nixl: None,
        }
    }
}

/// Serve `exports` on `listener` with the default [`BlockServerConfig`]: see
/// [`serve_exports_with`].
///
/// # Errors
///
/// As [`serve_exports_with`].
pub async fn serve_exports(listener: TcpListener, exports: Arc<KvExports>) -> io::Result<()> {
    serve_exports_with(listener, exports, BlockServerConfig::default()).await
}

/// Serve `exports` on `listener`: every connection is answered in order, one request of at most
/// [`max_request_bytes`](BlockServerConfig::max_request_bytes) at a time, its blocks written
/// from the exports' own buffers.
///
/// The future runs until the listener fails; spawn it, and drop or abort it to stop serving.
/// Its connections are its own tasks, cancelled with it.
///
/// # Cancel safety
///
/// Dropping the future closes the listener and every connection; a client in the middle of a
/// pull gets a broken connection and an error.
///
/// # Errors
///
/// An I/O error of the listener other than an aborted or reset connection.
pub async fn serve_exports_with(
    listener: TcpListener,
    exports: Arc<KvExports>,
    config: BlockServerConfig,
) -> io::Result<()> {
    let max_blocks = wire::blocks_per_request(config.max_request_bytes, exports.block_bytes());
    #[cfg(feature = "nixl")]
    let nixl: Nixl = config.nixl.clone();
    #[cfg(not(feature = "nixl"))]
    let nixl: Nixl = NoNixl;
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= config.max_connections.max(1) {
            connections.join_next().await;
            continue;
        }
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error),
        };
        let _ = socket.set_nodelay(true);
        let exports = exports.clone();
        let nixl = nixl.clone();
        match &config.wrap {
            None => connections.spawn(serve_connection(socket, exports, max_blocks, nixl)),
            Some(wrap) => {
                let handshake = wrap.server(socket);
                connections.spawn(async move {
                    match handshake.await {
                        Ok(socket) => serve_connection(socket, exports, max_blocks, nixl).await,
                        Err(error) => {
                            tracing::debug!(%error, "a block server connection was refused");
                        }
                    }
                })
            }
        };
    }
}

/// Answer one connection's requests until it closes or sends something unreadable.
async fn serve_connection(
    socket: impl AsyncRead + AsyncWrite + Unpin,
    exports: Arc<KvExports>,
    max_blocks: usize,
    nixl: Nixl,
) {
    let block_bytes = u32::try_from(exports.block_bytes()).unwrap_or(u32::MAX);
    let answer = |status, found| {
        Answer {
            status,
            found,
            block_bytes,
        }
        .encode()
    };
    // Headers are buffered; blocks larger than the buffer go straight to the socket.
    let mut socket = BufWriter::with_capacity(64 << 10, socket);
    let mut header = [0; REQUEST_HEADER];
    let mut scratch = Vec::new();
    let mut hashes = Vec::new();
    while socket.read_exact(&mut header).await.is_ok() {
        let Some(request) = Request::decode(header) else {
            let _ = socket.write_all(&answer(Status::Malformed, 0)).await;
            let _ = socket.flush().await;
            return;
        };
        let count = request.count as usize;
        // A stage sends no block bytes on the socket: it is bounded by its hashes only.
        let limit = match request.op {
            Op::Stage => MAX_STAGED_HASHES,
            _ => max_blocks,
        };
        let blocks = if count > limit {
            // Skip the hashes so that the connection stays usable.
            let mut skipped = (&mut socket).take(count as u64 * 8);
            if tokio::io::copy(&mut skipped, &mut tokio::io::sink())
                .await
                .is_err()
            {
                return;
            }
            Err(answer(Status::TooLarge, limit as u32))
        } else if read_hashes(&mut socket, count, &mut scratch, &mut hashes)
            .await
            .is_err()
        {
            return;
        } else {
            match request.op {
                Op::Release => {
                    #[cfg(feature = "nixl")]
                    if let Some(source) = &nixl {
                        source.unstage(request.transfer);
                    }
                    Err(answer(
                        Status::Ok,
                        u32::from(exports.release(request.transfer)),
                    ))
                }
                Op::Stage => {
                    let staged = stage(&nixl, &exports, request.transfer, &hashes).await;
                    let sent = socket.write_all(&staged).await;
                    if sent.is_err() || socket.flush().await.is_err() {
                        return;
                    }
                    continue;
                }
                Op::Fetch => match exports.blocks(request.transfer, &hashes) {
                    Ok(blocks) => Ok(blocks),
                    Err(Error::UnknownTransfer { .. }) => Err(answer(Status::UnknownTransfer, 0)),
                    Err(_) => Err(answer(Status::Malformed, 0)),
                },
            }
        };
        let sent = match blocks {
            Err(header) => socket.write_all(&header).await,
            Ok(blocks) => {
                send_blocks(
                    &mut socket,
                    answer(Status::Ok, blocks.len() as u32),
                    &blocks,
                )
                .await
            }
        };
        if sent.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
}

/// The whole answer to a stage request: the staged blocks' metadata and addresses, or why
/// there are none.
#[cfg(feature = "nixl")]
async fn stage(
    nixl: &Nixl,
    exports: &Arc<KvExports>,
    transfer: u64,
    hashes: &[SequenceHash],
) -> Vec<u8> {
    let block_bytes = u32::try_from(exports.block_bytes()).unwrap_or(u32::MAX);
    let header = |status, found| {
        Answer {
            status,
            found,
            block_bytes,
        }
        .encode()
        .to_vec()
    };
    let Some(source) = nixl.clone() else {
        return header(Status::Unsupported, 0);
    };
    let (exports, hashes) = (exports.clone(), hashes.to_vec());
    let staged =
        tokio::task::spawn_blocking(move || source.stage(&exports, transfer, &hashes)).await;
    match staged {
        Ok(Ok(staged)) => {
            let mut answer = header(Status::Ok, staged.addresses.len() as u32);
            wire::encode_staged(&staged.metadata, &staged.addresses, &mut answer);
            answer
        }
        Ok(Err(Error::UnknownTransfer { .. })) => header(Status::UnknownTransfer, 0),
        Ok(Err(error)) => {
            tracing::debug!(transfer, %error, "a NIXL stage failed");
            header(Status::Malformed, 0)
        }
        Err(_) => header(Status::Malformed, 0),
    }
}

/// Without NIXL, a stage request is unsupported.
#[cfg(not(feature = "nixl"))]
async fn stage(_: &Nixl, exports: &Arc<KvExports>, _: u64, _: &[SequenceHash]) -> Vec<u8> {
    Answer {
        status: Status::Unsupported,
        found: 0,
        block_bytes: u32::try_from(exports.block_bytes()).unwrap_or(u32::MAX),
    }
    .encode()
    .to_vec()
}

/// An answer header and its blocks.
async fn send_blocks(
    socket: &mut (impl AsyncWrite + Unpin),
    header: [u8; ANSWER_HEADER],
    blocks: &[bytes::Bytes],
) -> io::Result<()> {
    socket.write_all(&header).await?;
    for block in blocks {
        socket.write_all(block).await?;
    }
    Ok(())
}
