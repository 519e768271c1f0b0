//! Server-sent events: one `data:` line of JSON per chunk, then `data: [DONE]` (or, for the
//! Responses API, events named by an `event:` line and no end marker), with a comment (`:`)
//! after every 15 s of silence. The events ready when the body is polled leave together, in one
//! HTTP chunk (see [`SseFrames`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::ApiError;

/// The longest silence on a stream before a keep-alive comment is sent (axum's default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most bytes of ready events joined into one body frame.
const MAX_FRAME: usize = 64 << 10;

/// The room a body frame starts with, at least.
const MIN_CAPACITY: usize = 512;

/// The keep-alive comment, as axum writes it.
const COMMENT: &[u8] = b":\n\n";

/// The event that ends every stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// An SSE response of `chunks`. An error mid-stream is sent as one `data:` event holding an
/// OpenAI error body, and the stream then ends with `[DONE]` as usual.
pub(crate) fn respond<T, S>(chunks: S) -> Response
where
    T: Serialize + 'static,
    S: Stream<Item = Result<T, ApiError>> + Send + 'static,
{
    respond_with(chunks, |chunk, events| match chunk {
        Ok(chunk) => events.json(&chunk),
        Err(error) => events.error(&error),
    })
}

/// An SSE response of `items`, each written as zero or more `data:` events by `write`, then
/// `data: [DONE]`; the same bytes and headers as axum's `Sse` of those events, built without an
/// `Event` (and its buffer) per event.
pub(crate) fn respond_with<I, S, W>(items: S, write: W) -> Response
where
    I: 'static,
    S: Stream<Item = I> + Send + 'static,
    W: FnMut(I, &mut EventWriter<'_>) + Send + Unpin + 'static,
{
    frames_response(SseFrames::new(items.boxed(), write, MAX_FRAME, DONE))
}

/// An SSE response of `items`, each written as zero or more events by `write`, with no end
/// marker: the stream's last event says it is the last (the Responses API's way).
pub(crate) fn respond_unmarked<I, S, W>(items: S, write: W) -> Response
where
    I: 'static,
    S: Stream<Item = I> + Send + 'static,
    W: FnMut(I, &mut EventWriter<'_>) + Send + Unpin + 'static,
{
    frames_response(SseFrames::new(items.boxed(), write, MAX_FRAME, b""))
}

/// The response whose body is `frames`, with axum's SSE headers.
fn frames_response<I, W>(frames: SseFrames<I, W>) -> Response
where
    I: 'static,
    W: FnMut(I, &mut EventWriter<'_>) + Send + Unpin + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// Appends events to a body frame.
pub(crate) struct EventWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl EventWriter<'_> {
    /// One event of the JSON `write` appends (compact JSON has no line breaks, so it is one
    /// `data:` line). If `write` fails, what it wrote is taken back and the event holds an
    /// error body instead.
    pub(crate) fn json_with(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) {
        self.event(None, write, |error| {
            format!(
                "{{\"error\":{{\"message\":\"cannot serialise a chunk: {error}\",\"type\":\"server_error\"}}}}"
            )
        });
    }

    /// One event named `name` (an `event:` line before its `data:` line) of `value` as JSON;
    /// if `value` cannot be serialised, of the text `fallback` makes of the error instead.
    pub(crate) fn named<T: Serialize>(
        &mut self,
        name: &str,
        value: &T,
        fallback: impl FnOnce(serde_json::Error) -> String,
    ) {
        self.event(
            Some(name),
            |out| serde_json::to_writer(out, value),
            fallback,
        );
    }

    /// One event, named or not, of what `write` appends as its data, or of `fallback`'s text
    /// when it fails (what it wrote taken back). The bytes axum's `Event` writes: `event:`
    /// first, then `data:`, then a blank line.
    fn event(
        &mut self,
        name: Option<&str>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
        fallback: impl FnOnce(serde_json::Error) -> String,
    ) {
        if let Some(name) = name {
            self.out.extend_from_slice(b"event: ");
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'\n');
        }
        self.out.extend_from_slice(b"data: ");
        let data = self.out.len();
        if let Err(error) = write(self.out) {
            self.out.truncate(data);
            self.out.extend_from_slice(fallback(error).as_bytes());
        }
        self.out.extend_from_slice(b"\n\n");
    }

    /// One event of `value` as JSON.
    pub(crate) fn json<T: Serialize>(&mut self, value: &T) {
        self.json_with(|out| serde_json::to_writer(out, value));
    }

    /// One event of `error`'s OpenAI error body.
    pub(crate) fn error(&mut self, error: &ApiError) {
        self.json(&error.body());
    }
}

/// The body of [`respond_with`] and [`respond_unmarked`]: each poll takes the first item
/// (waiting for it), writes its events, then writes those of every item after it that is ready
/// without waiting, up to `limit` bytes, and yields them as one frame; the end marker
/// (`data: [DONE]`, or nothing) joins the frame in which the items end. After [`KEEP_ALIVE`]
/// without an event it yields a comment.
///
/// Every event leaves in the same order and no later than one frame per event would send it
/// (the joining never waits); only the boundaries between HTTP chunks change, so hyper writes
/// one chunk, with one system call, where it would write one per event. The bytes are those of
/// axum's `Sse` body with its keep-alive, built in one buffer per frame (not a string, an event
/// buffer and a copy per event), with one clock read per frame: axum's keep-alive resets its
/// timer at every event, this one moves the timer only when it fires.
///
/// Cancel safety: dropping it drops `items`; nothing it has taken is held across a poll.
struct SseFrames<I, W> {
    items: BoxStream<'static, I>,
    write: W,
    limit: usize,
    /// Written after the last item's events.
    end: &'static [u8],
    timer: Pin<Box<Sleep>>,
    /// When the last frame left.
    last: Instant,
    /// The items have ended (and the end marker has been written).
    ended: bool,
    /// The length of the last frame, which the next one starts with room for (a stream's
    /// frames are alike: one event each, or a whole answer each).
    last_length: usize,
}

impl<I, W> SseFrames<I, W> {
    fn new(items: BoxStream<'static, I>, write: W, limit: usize, end: &'static [u8]) -> Self {
        let last = Instant::now();
        SseFrames {
            items,
            write,
            limit,
            end,
            timer: Box::pin(tokio::time::sleep_until(last + KEEP_ALIVE)),
            last,
            ended: false,
            last_length: 0,
        }
    }
}

impl<I, W> Stream for SseFrames<I, W>
where
    W: FnMut(I, &mut EventWriter<'_>) + Unpin,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut out = Vec::new();
        while out.len() < this.limit {
            match this.items.poll_next_unpin(cx) {
                Poll::Ready(Some(item)) => {
                    if out.capacity() == 0 {
                        out.reserve(this.last_length.max(MIN_CAPACITY).min(this.limit));
                    }
                    (this.write)(item, &mut EventWriter { out: &mut out });
                }
                Poll::Ready(None) => {
                    out.extend_from_slice(this.end);
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if out.is_empty() && this.ended {
            return Poll::Ready(None);
        }
        // An item may write no event (a step that releases no text): wait for the next.
        if !out.is_empty() {
            this.last = Instant::now();
            this.last_length = out.len();
            return Poll::Ready(Some(Ok(Bytes::from(out))));
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let due = this.last + KEEP_ALIVE;
            let now = Instant::now();
            if now >= due {
                this.last = now;
                this.timer.as_mut().reset(now + KEEP_ALIVE);
                return Poll::Ready(Some(Ok(Bytes::from_static(COMMENT))));
            }
            this.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

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

    /// Items that are each their second, each ready at that second from now (virtual time).
    fn at_seconds<const N: usize>(seconds: [u64; N]) -> impl Stream<Item = u64> + Send {
        let start = Instant::now();
        stream::iter(seconds).then(move |second| async move {
            tokio::time::sleep_until(start + Duration::from_secs(second)).await;
            second
        })
    }

    /// `frames` with their text borrowed, to compare with literals.
    fn borrowed(frames: &[(Duration, String)]) -> Vec<(Duration, &str)> {
        frames
            .iter()
            .map(|(when, text)| (*when, text.as_str()))
            .collect()
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
    async fn a_frame_stops_joining_at_the_limit() {
        // Each item writes 9 bytes (`data: N\n\n`); a frame takes items while it holds fewer
        // than 16 bytes, so two each, and the end marker joins the last.
        let write = |item: u32, events: &mut EventWriter<'_>| events.json(&item);
        let frames = SseFrames::new(stream::iter(1..=5).boxed(), write, 16, DONE);
        let frames: Vec<_> = frames
            .map(|frame| String::from_utf8(frame.expect("a frame").to_vec()).expect("UTF-8"))
            .collect()
            .await;
        let expected = [
            "data: 1\n\ndata: 2\n\n",
            "data: 3\n\ndata: 4\n\n",
            "data: 5\n\ndata: [DONE]\n\n",
        ];
        assert_eq!(frames, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_gets_a_comment_every_interval_and_a_busy_one_none() {
        let secs = Duration::from_secs;
        // Events at 0, 10 and 45 s: no comment in the first 10 s of silence, two in the 35 s
        // after it (15 s after the last event, then 15 s after that comment).
        // Named events without an end marker, as the Responses API sends them.
        let response = respond_unmarked(at_seconds([0, 10, 45]), |second, events| {
            events.named("tick", &second, |error| error.to_string());
        });
        let seen = frames(response).await;
        let expected = [
            (secs(0), "event: tick\ndata: 0\n\n"),
            (secs(10), "event: tick\ndata: 10\n\n"),
            (secs(25), ":\n\n"),
            (secs(40), ":\n\n"),
            (secs(45), "event: tick\ndata: 45\n\n"),
        ];
        assert_eq!(borrowed(&seen), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn written_events_get_the_same_comments_and_an_item_without_events_sends_nothing() {
        let secs = Duration::from_secs;
        // Items at 0, 20 and 40 s; the one at 20 s writes no event, so the silence from 0 to
        // 40 s gets comments at 15 and 30 s, and no empty frame leaves at 20 s.
        let response = respond_with(at_seconds([0, 20, 40]), |second, events| {
            if second != 20 {
                events.json(&second);
            }
        });
        let seen = frames(response).await;
        let expected = [
            (secs(0), "data: 0\n\n"),
            (secs(15), ":\n\n"),
            (secs(30), ":\n\n"),
            (secs(40), "data: 40\n\ndata: [DONE]\n\n"),
        ];
        assert_eq!(borrowed(&seen), expected);
    }

    #[tokio::test]
    async fn named_and_unnamed_events_are_the_bytes_axum_writes() {
        use axum::response::sse::{Event, Sse};
        let axum_events = [
            Event::default().event("response.created").data("{\"a\":1}"),
            Event::default().data("{\"b\":\"x y\"}"),
        ];
        let axum_body =
            Sse::new(stream::iter(axum_events.map(Ok::<_, Infallible>))).into_response();
        let axum_bytes: String = frames(axum_body)
            .await
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        let ours = respond_unmarked(stream::iter([()]), |(), events| {
            events.named("response.created", &serde_json::json!({"a": 1}), |e| {
                e.to_string()
            });
            events.json(&serde_json::json!({"b": "x y"}));
        });
        let our_bytes: String = frames(ours)
            .await
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        assert_eq!(our_bytes, axum_bytes);
    }

    #[tokio::test]
    async fn a_chunk_that_cannot_be_serialised_is_an_error_event() {
        /// Serialisation that always fails.
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("broken"))
            }
        }
        let response = respond(stream::iter([Ok::<_, ApiError>(Broken)]));
        let seen = frames(response).await;
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].1,
            "data: {\"error\":{\"message\":\"cannot serialise a chunk: broken\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n"
        );
    }
}
