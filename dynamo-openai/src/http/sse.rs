//! Server-sent events: one `data:` line of JSON per chunk, then `data: [DONE]`, with a comment
//! (`:`) after every 15 s of silence.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::ApiError;

/// The longest silence on a stream before a keep-alive comment is sent (axum's default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
            Event::default().data(data)
        })
        .chain(stream::once(async { Event::default().data("[DONE]") }));
    events_response(events)
}

/// An SSE response of `events`, with keep-alive comments.
pub(crate) fn events_response<S>(events: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    Sse::new(KeepAlive::new(events.boxed())).into_response()
}

/// `events`, with a keep-alive comment after every [`KEEP_ALIVE`] without an event.
///
/// axum's own keep-alive resets its timer at every event (a lock on the runtime's timer wheel
/// per streamed chunk); this one only notes the time of the last event (a clock read) and
/// moves the timer when it fires, to the last event's time plus the interval.
///
/// Cancel safety: dropping it drops `events`.
struct KeepAlive {
    events: BoxStream<'static, Event>,
    timer: Pin<Box<Sleep>>,
    last: Instant,
}

impl KeepAlive {
    fn new(events: BoxStream<'static, Event>) -> Self {
        let last = Instant::now();
        KeepAlive {
            events,
            timer: Box::pin(tokio::time::sleep_until(last + KEEP_ALIVE)),
            last,
        }
    }
}

impl Stream for KeepAlive {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.events.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => {
                this.last = Instant::now();
                return Poll::Ready(Some(Ok(event)));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let due = this.last + KEEP_ALIVE;
            let now = Instant::now();
            if now >= due {
                this.last = now;
                this.timer.as_mut().reset(now + KEEP_ALIVE);
                return Poll::Ready(Some(Ok(Event::DEFAULT_KEEP_ALIVE)));
            }
            this.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's frames as they arrive, each with the time it came.
    async fn frames(response: Response) -> Vec<(Duration, String)> {
        let started = Instant::now();
        let mut body = response.into_body().into_data_stream();
        let mut out = Vec::new();
        while let Some(data) = body.next().await {
            let data = data.expect("a frame");
            let text = String::from_utf8(data.to_vec()).expect("UTF-8");
            out.push((started.elapsed(), text));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_gets_a_comment_every_interval_and_a_busy_one_none() {
        let secs = Duration::from_secs;
        // Events at 0, 10 and 45 s: no comment in the first 10 s of silence, two in the 35 s
        // after it (15 s after the last event, then 15 s after that comment).
        let start = Instant::now();
        let events = stream::iter([0, 10, 45]).then(move |second| async move {
            tokio::time::sleep_until(start + secs(second)).await;
            Event::default().data(second.to_string())
        });
        let seen = frames(events_response(events)).await;
        let expected = [
            (secs(0), "data: 0\n\n"),
            (secs(10), "data: 10\n\n"),
            (secs(25), ":\n\n"),
            (secs(40), ":\n\n"),
            (secs(45), "data: 45\n\n"),
        ];
        let seen: Vec<(Duration, &str)> = seen
            .iter()
            .map(|(when, text)| (*when, text.as_str()))
            .collect();
        assert_eq!(seen, expected);
    }
}
