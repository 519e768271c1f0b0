//! The listener to serve a gateway from: accepted sockets with `TCP_NODELAY`.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A [`TcpListener`] whose accepted connections have `TCP_NODELAY` set: what [`no_delay`]
/// returns, for `axum::serve`.
pub type NoDelayListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// Set `TCP_NODELAY` on every connection `listener` accepts.
///
/// A streamed answer is many small writes, one per server-sent event. With Nagle's algorithm
/// on, the kernel holds each small write back until the previous one is acknowledged, and the
/// client delays its acknowledgements by up to 40 ms: a 16-chunk stream from a split
/// deployment took 44 ms at the median instead of about 1 ms (`docs/reliability.md`).
///
/// ```no_run
/// use dynamo_openai::{Gateway, GatewayConfig, ModelRegistry};
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Gateway::new(ModelRegistry::default(), GatewayConfig::default()).into_router();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(dynamo_openai::no_delay(listener), app).await
/// # }
/// ```
pub fn no_delay(listener: TcpListener) -> NoDelayListener {
    listener.tap_io(set_no_delay)
}

fn set_no_delay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
}
