//! Server-sent events: one `data:` line of JSON per chunk, then `data: [DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, stream};
use serde::Serialize;

use crate::ApiError;

/// An SSE response of `chunks`. An error mid-stream is sent as one `data:` event holding an
/// OpenAI error body, and the stream then ends with `[DONE]` as usual.
pub(crate) fn respond<T, S>(chunks: S) -> Response
where
    T: Serialize,
    S: Stream<Item = Result<T, ApiError>> + Send + 'static,
{
    let events = chunks
        .map(|chunk| {
            let data = match chunk {
                Ok(chunk) => serde_json::to_string(&chunk),
                Err(error) => serde_json::to_string(&error.body()),
            };
            let data = data.unwrap_or_else(|error| {
                format!("{{\"error\":{{\"message\":\"cannot serialise a chunk: {error}\",\"type\":\"server_error\"}}}}")
            });
            Ok::<_, Infallible>(Event::default().data(data))
        })
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
