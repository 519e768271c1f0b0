//! Serving an engine on a TCP listener.

use std::collections::HashMap;
use std::sync::Arc;

use dynamo_core::{BoxEngine, Engine, EngineExt, Error};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::frame::{DEFAULT_MAX_FRAME, ErrorBody, Frame, encode_frame, read_frame, write_frames};
use super::tls::PlaneTls;

/// How [`serve`] treats its connections.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The largest frame accepted or sent, in bytes.
    pub max_frame: u32,
    /// Frames waiting to be written per connection; a full queue makes the streams wait
    /// (backpressure all the way to the engine).
    pub write_queue: usize,
    /// TLS on every connection (`None`: plain TCP). A connection whose handshake fails, or
    /// takes over 10 s, is closed and logged.
    pub tls: Option<PlaneTls>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_frame: DEFAULT_MAX_FRAME,
            write_queue: 1024,
            tls: None,
        }
    }
}

/// Serve `engine` on every connection `listener` accepts, until the returned future is dropped
/// (which closes every connection and cancels every generation on them).
///
/// # Errors
///
/// Only when accepting connections fails.
pub async fn serve<E>(listener: TcpListener, engine: E, config: ServeConfig) -> std::io::Result<()>
where
    E: Engine + Clone + Send + Sync + 'static,
    E::Future: Send,
{
    serve_with_shutdown(listener, engine, config, CancellationToken::new()).await
}

/// [`serve`], with a graceful shutdown: once `shutdown` is cancelled the listener stops
/// accepting, new requests on open connections are answered `unavailable`, and each connection
/// closes when its open streams have ended and their frames are written. The future resolves
/// when every connection has closed.
///
/// # Cancel safety
///
/// Dropping the future (a drain deadline) closes every connection at once and cancels every
/// generation on them, as with [`serve`].
///
/// # Errors
///
/// Only when accepting connections fails.
pub async fn serve_with_shutdown<E>(
    listener: TcpListener,
    engine: E,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    E: Engine + Clone + Send + Sync + 'static,
    E::Future: Send,
{
    let engine = BoxEngine::new(engine);
    let mut connections = JoinSet::new();
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.cancelled() => break,
        };
        let _ = socket.set_nodelay(true);
        let (engine, config, shutdown) = (engine.clone(), config.clone(), shutdown.clone());
        // The handshake runs in the connection's task, so a slow one holds up no other.
        connections.spawn(async move {
            match config.tls.clone() {
                None => {
                    let (reader, writer) = socket.into_split();
                    connection(reader, writer, engine, config, shutdown).await;
                }
                Some(tls) => match tls.accept(socket).await {
                    Ok(stream) => {
                        let (reader, writer) = tokio::io::split(stream);
                        connection(reader, writer, engine, config, shutdown).await;
                    }
                    Err(error) => {
                        tracing::warn!(%peer, %error, "refused a request-plane connection: TLS");
                    }
                },
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection: read frames, start and cancel streams, write their chunks; after
/// `shutdown`, refuse new streams and close once the open ones have ended.
async fn connection(
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    engine: BoxEngine,
    config: ServeConfig,
    shutdown: CancellationToken,
) {
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(config.write_queue);
    let live: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
    let closed = CancellationToken::new();
    let mut streams = JoinSet::new();
    let write = write_frames(&mut writer, &mut outgoing);
    tokio::pin!(write);
    let read = async {
        loop {
            // Cancel safety: a frame half read when the drain ends is lost with the connection.
            let frame = tokio::select! {
                frame = read_frame(&mut reader, config.max_frame) => frame,
                () = drained(&shutdown, &mut streams) => return true,
            };
            match frame {
                Ok(Some(Frame::Request { stream, .. })) if shutdown.is_cancelled() => {
                    let error = Error::unavailable("the worker is shutting down");
                    send(&frames, stream, &error, config.max_frame).await;
                }
                Ok(Some(Frame::Request { stream, request })) => {
                    let token = closed.child_token();
                    live.lock().insert(stream, token.clone());
                    streams.spawn(run_stream(
                        stream,
                        (*request).with_cancellation(token),
                        engine.clone(),
                        frames.clone(),
                        Arc::clone(&live),
                        config.max_frame,
                    ));
                }
                Ok(Some(Frame::Cancel { stream })) => {
                    if let Some(token) = live.lock().remove(&stream) {
                        token.cancel();
                    }
                }
                Ok(Some(_)) => {
                    let error =
                        Error::invalid_request("a client may send only request and cancel frames");
                    send(&frames, 0, &error, config.max_frame).await;
                }
                Ok(None) => return false,
                Err(error) if error.is_recoverable() => {
                    send(
                        &frames,
                        0,
                        &Error::invalid_request(error.to_string()),
                        config.max_frame,
                    )
                    .await;
                }
                Err(_) => return false,
            }
            while streams.try_join_next().is_some() {}
        }
    };
    let drained = tokio::select! {
        drained = read => drained,
        () = &mut write => false,
    };
    if drained {
        // Every stream has ended: write what they queued, then close.
        drop(frames);
        write.await;
    }
    // The connection is gone: stop everything it started.
    closed.cancel();
    streams.shutdown().await;
}

/// Resolves once `shutdown` is cancelled and every stream in `streams` has ended.
async fn drained(shutdown: &CancellationToken, streams: &mut JoinSet<()>) {
    shutdown.cancelled().await;
    while streams.join_next().await.is_some() {}
}

/// Run one generation and forward its chunks.
async fn run_stream(
    stream: u64,
    request: dynamo_core::GenerateRequest,
    mut engine: BoxEngine,
    frames: mpsc::Sender<Vec<u8>>,
    live: Arc<Mutex<HashMap<u64, CancellationToken>>>,
    max_frame: u32,
) {
    let cancelled = request.cancellation().clone();
    match engine.generate(request).await {
        Err(error) => send(&frames, stream, &error, max_frame).await,
        Ok(mut tokens) => loop {
            let next = tokio::select! {
                next = tokens.next() => next,
                () = cancelled.cancelled() => Some(Err(Error::Cancelled)),
            };
            match next {
                Some(Ok(chunk)) => {
                    let last = chunk.is_final();
                    let frame = Frame::Chunk { stream, chunk };
                    let Ok(bytes) = encode_frame(&frame, max_frame) else {
                        let error = Error::internal("a chunk was over the frame limit");
                        send(&frames, stream, &error, max_frame).await;
                        break;
                    };
                    if frames.send(bytes).await.is_err() || last {
                        break;
                    }
                }
                Some(Err(error)) => {
                    send(&frames, stream, &error, max_frame).await;
                    break;
                }
                None => {
                    let error = Error::internal("the engine's stream ended without a final chunk");
                    send(&frames, stream, &error, max_frame).await;
                    break;
                }
            }
        },
    }
    live.lock().remove(&stream);
}

/// Send an error frame (best effort: the connection may be gone).
async fn send(frames: &mpsc::Sender<Vec<u8>>, stream: u64, error: &Error, max_frame: u32) {
    let frame = Frame::Error {
        stream,
        error: ErrorBody::from(error),
    };
    if let Ok(bytes) = encode_frame(&frame, max_frame) {
        let _ = frames.send(bytes).await;
    }
}
