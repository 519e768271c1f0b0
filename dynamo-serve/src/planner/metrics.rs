//! `dynamo-serve planner --metrics-addr`: the planner's series (`dynamo_planner` documents
//! them) as Prometheus text on `GET /metrics`.

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

/// Install the process's Prometheus recorder and serve it at `address`, on a task of its own
/// for the life of the process; the address bound (`address` with port 0 gets a free port).
pub(super) async fn serve(address: SocketAddr) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let recorder = crate::install_metrics()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("--metrics-addr {address}: {error}"))?;
    let bound = listener.local_addr()?;
    let text = move || {
        let recorder = recorder.clone();
        async move {
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                recorder.render(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", get(text));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the planner's metrics are no longer served");
        }
    });
    Ok(bound)
}
