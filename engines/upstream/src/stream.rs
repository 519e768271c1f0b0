//! The loop every streamed upstream answer shares: read the body's frames, decode its
//! server-sent events, hand each to the engine's [`EventHandler`] and pass on the chunks it
//! queues, until the answer is complete, the body ends or the request is cancelled.

use std::collections::VecDeque;

use dynamo_core::{Error, TokenChunk, TokenStream};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::sse::SseDecoder;

/// What an engine does with its server's events.
pub trait EventHandler: Send + 'static {
    /// Handle one event's `data`, queueing the chunks it makes on `out`. Answer `true` when
    /// the answer is complete (nothing more is read, and the connection goes back to the pool
    /// if the server ended the body).
    ///
    /// # Errors
    ///
    /// Whatever the event means (an error event, a malformed one): the stream ends with it,
    /// after the chunks already queued.
    fn on_event(&mut self, data: &str, out: &mut VecDeque<TokenChunk>) -> Result<bool, Error>;

    /// The body ended between events before [`on_event`](Self::on_event) said the answer is
    /// complete: `Ok` if the answer is complete anyway, else the error to end the stream
    /// with (usually `unavailable`, so that a router continues the request elsewhere).
    ///
    /// # Errors
    ///
    /// As said.
    fn on_end(&mut self, out: &mut VecDeque<TokenChunk>) -> Result<(), Error>;
}

/// The [`TokenStream`] of a streamed answer whose events `handler` reads, each at most
/// `max_event` bytes; `cancel` (the request's token) ends it with [`Error::Cancelled`].
///
/// A connection that fails mid-body, or a body that ends inside an event, ends the stream with
/// `unavailable`; an event larger than `max_event` with `internal`.
pub fn event_stream<H: EventHandler>(
    body: Incoming,
    handler: H,
    max_event: usize,
    cancel: CancellationToken,
) -> TokenStream {
    let state = Reader {
        body,
        decoder: SseDecoder::new(max_event),
        handler,
        pending: VecDeque::new(),
        done: false,
        error: None,
        cancel: cancel.clone(),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    TokenStream::new(stream, cancel)
}

struct Reader<H> {
    body: Incoming,
    decoder: SseDecoder,
    handler: H,
    pending: VecDeque<TokenChunk>,
    /// The answer is complete, or an error ended it: nothing more is read.
    done: bool,
    /// The error that ended the answer, passed on after the queued chunks.
    error: Option<Error>,
    cancel: CancellationToken,
}

impl<H: EventHandler> Reader<H> {
    async fn next(&mut self) -> Option<Result<TokenChunk, Error>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            // The chunks queued before an error go first, then the error.
            if let Some(error) = self.error.take() {
                return Some(Err(error));
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.read().await {
                self.done = true;
                self.error = Some(error);
            }
        }
    }

    /// Read one frame of the body and hand the events it completes to the handler.
    async fn read(&mut self) -> Result<(), Error> {
        let frame = tokio::select! {
            frame = self.body.frame() => frame,
            () = self.cancel.cancelled() => return Err(Error::Cancelled),
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => return Ok(()),
            },
            Some(Err(error)) => {
                return Err(Error::unavailable("the upstream stream failed").with_source(error));
            }
            None => {
                self.done = true;
                if let Err(cut) = self.decoder.finish() {
                    return Err(Error::unavailable(cut.to_string()));
                }
                return self.handler.on_end(&mut self.pending);
            }
        };
        self.decoder
            .push(&data)
            .map_err(|error| Error::internal(error.to_string()))?;
        while let Some(event) = self.decoder.next_event() {
            if self.handler.on_event(&event.data, &mut self.pending)? {
                self.done = true;
                break;
            }
        }
        Ok(())
    }
}
