//! The block server: a prefill worker's [`KvExports`] answering pulls over TCP.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::wire::{ANSWER_HEADER, Answer, Op, REQUEST_HEADER, Request, Status, read_hashes};
use super::{KvExports, wire};
use crate::{BlockStore, Error};

/// How a block server bounds its work.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockServerConfig {
    /// The most block bytes one request may ask for (at least one block is always allowed); the
    /// server's only buffer per connection is this big. A larger request is refused with the
    /// limit, and the client reports it. Default 16 MiB.
    pub max_request_bytes: usize,
    /// Connections served at once; further ones wait in the listener's backlog. Default 64.
    pub max_connections: usize,
}

impl Default for BlockServerConfig {
    fn default() -> Self {
        BlockServerConfig {
            max_request_bytes: 16 << 20,
            max_connections: 64,
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

/// Serve `exports` on `listener`: every connection is answered in order, one request at a time,
/// each from a buffer of at most [`max_request_bytes`](BlockServerConfig::max_request_bytes).
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
        connections.spawn(serve_connection(socket, exports.clone(), max_blocks));
    }
}

/// Answer one connection's requests until it closes or sends something unreadable.
async fn serve_connection(mut socket: TcpStream, exports: Arc<KvExports>, max_blocks: usize) {
    let block_bytes = exports.block_bytes();
    let answer = |status, found| Answer {
        status,
        found,
        block_bytes: u32::try_from(block_bytes).unwrap_or(u32::MAX),
    };
    let mut header = [0; REQUEST_HEADER];
    let mut scratch = Vec::new();
    let mut hashes = Vec::new();
    // The answer header, then room for the blocks of the largest request seen so far.
    let mut out = vec![0; ANSWER_HEADER];
    while socket.read_exact(&mut header).await.is_ok() {
        let Some(request) = Request::decode(header) else {
            let _ = socket
                .write_all(&answer(Status::Malformed, 0).encode())
                .await;
            return;
        };
        let count = request.count as usize;
        if count > max_blocks {
            // Skip the hashes so that the connection stays usable.
            let mut skipped = (&mut socket).take(count as u64 * 8);
            let refused = answer(Status::TooLarge, max_blocks as u32).encode();
            if tokio::io::copy(&mut skipped, &mut tokio::io::sink())
                .await
                .is_err()
                || socket.write_all(&refused).await.is_err()
            {
                return;
            }
            continue;
        }
        if read_hashes(&mut socket, count, &mut scratch, &mut hashes)
            .await
            .is_err()
        {
            return;
        }
        let (reply, found) = match request.op {
            Op::Release => (
                answer(Status::Ok, u32::from(exports.release(request.transfer))),
                0,
            ),
            Op::Fetch => {
                let end = ANSWER_HEADER + count * block_bytes;
                if out.len() < end {
                    out.resize(end, 0);
                }
                match exports.read(request.transfer, &hashes, &mut out[ANSWER_HEADER..end]) {
                    Ok(found) => (answer(Status::Ok, found as u32), found),
                    Err(Error::UnknownTransfer { .. }) => (answer(Status::UnknownTransfer, 0), 0),
                    Err(_) => (answer(Status::Malformed, 0), 0),
                }
            }
        };
        out[..ANSWER_HEADER].copy_from_slice(&reply.encode());
        let len = ANSWER_HEADER + found * block_bytes;
        if socket.write_all(&out[..len]).await.is_err() {
            return;
        }
    }
}
