//! Server-sent events: one `data:` line of JSON per chunk, then `data: [DONE]`, with a comment
//! (`:`) after every 15 s of silence. The events ready when the body is polled leave together,
//! in one HTTP chunk (see [`Coalesce`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::ApiError;

/// The longest silence on a stream before a keep-alive comment is sent (axum's default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most bytes of ready events joined into one body frame.
const MAX_FRAME: usize = 64 << 10;

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

/// An SSE response of `events`, with keep-alive comments, the events that are ready together
/// written as one body frame.
pub(crate) fn events_response<S>(events: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    Sse::new(KeepAlive::new(events.boxed()))
        .into_response()
        .map(|body| Body::from_stream(Coalesce::new(body.into_data_stream(), MAX_FRAME)))
}

/// A byte stream whose items are joined while the next is ready: each poll takes the first
/// item (waiting for it as the inner stream does), then every one after it that the inner
/// stream has ready without waiting, up to `limit` bytes, and yields them as one.
///
/// Every byte leaves in the same order and no later than without it (the joining never
/// waits); only the boundaries between frames change, so hyper writes one chunk, with one
/// system call, where it wrote one per event. An error after joined bytes is yielded on the
/// next poll, after them.
///
/// Cancel safety: dropping it drops the inner stream; nothing it has taken is held across a
/// poll.
struct Coalesce<S, E> {
    inner: S,
    limit: usize,
    /// An error the inner stream gave after bytes already taken, yielded next.
    error: Option<E>,
    /// The inner stream has ended.
    ended: bool,
}

impl<S, E> Coalesce<S, E> {
    fn new(inner: S, limit: usize) -> Self {
        Coalesce {
            inner,
            limit,
            error: None,
            ended: false,
        }
    }
}

impl<S, E> Stream for Coalesce<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let first = match ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(bytes)) => bytes,
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            None => {
                this.ended = true;
                return Poll::Ready(None);
            }
        };
        // The first item alone is passed on as it is; a copy only once a second one is ready.
        let mut joined: Option<Vec<u8>> = None;
        let mut length = first.len();
        while length < this.limit {
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let buffer = joined.get_or_insert_with(|| {
                        let mut buffer = Vec::with_capacity(4 * (first.len() + bytes.len()));
                        buffer.extend_from_slice(&first);
                        buffer
                    });
                    buffer.extend_from_slice(&bytes);
                    length += bytes.len();
                }
                Poll::Ready(Some(Err(error))) => {
                    this.error = Some(error);
                    break;
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(joined.map_or(first, Bytes::from))))
    }
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

    /// The frames of the SSE body of `events`, each as it comes, within a minute of virtual
    /// time each (a frame that never comes fails the test instead of hanging it).
    struct Frames(axum::body::BodyDataStream);

    impl Frames {
        fn of(response: Response) -> Self {
            Frames(response.into_body().into_data_stream())
        }

        async fn next(&mut self) -> Option<String> {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.0.next())
                .await
                .expect("a frame without waiting for a later event")?;
            let data = frame.expect("a frame");
            Some(String::from_utf8(data.to_vec()).expect("UTF-8"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ready_events_leave_in_one_frame_and_a_waiting_stream_sends_what_it_has() {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<u32, ApiError>>();
        let mut frames = Frames::of(respond(receiver));
        // Two events ready: one frame, in their order.
        sender.unbounded_send(Ok(1)).expect("open");
        sender.unbounded_send(Ok(2)).expect("open");
        assert_eq!(
            frames.next().await.as_deref(),
            Some("data: 1\n\ndata: 2\n\n")
        );
        // One event while the stream stays open: it leaves without waiting for the next.
        sender.unbounded_send(Ok(3)).expect("open");
        assert_eq!(frames.next().await.as_deref(), Some("data: 3\n\n"));
        // The last event and the end: `[DONE]` joins it.
        sender.unbounded_send(Ok(4)).expect("open");
        drop(sender);
        assert_eq!(
            frames.next().await.as_deref(),
            Some("data: 4\n\ndata: [DONE]\n\n")
        );
        assert_eq!(frames.next().await, None);
    }

    #[tokio::test]
    async fn a_frame_stops_joining_at_the_limit_and_an_error_follows_the_bytes_before_it() {
        let items = ["abcd", "efgh", "ijkl", "mnop", "qr"]
            .map(|text| Ok::<_, &str>(Bytes::from_static(text.as_bytes())));
        let frames: Vec<_> = Coalesce::new(stream::iter(items), 8).collect().await;
        let expected =
            ["abcdefgh", "ijklmnop", "qr"].map(|text| Ok(Bytes::from_static(text.as_bytes())));
        assert_eq!(frames, expected);
        let items = [
            Ok(Bytes::from_static(b"a")),
            Err("cut"),
            Ok(Bytes::from_static(b"b")),
        ];
        let frames: Vec<_> = Coalesce::new(stream::iter(items), 8).collect().await;
        let expected = [
            Ok(Bytes::from_static(b"a")),
            Err("cut"),
            Ok(Bytes::from_static(b"b")),
        ];
        assert_eq!(frames, expected);
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
