//! The loop every streamed upstream answer shares: read the body's frames, decode its
//! server-sent events, hand each to the engine's [`EventHandler`] and pass on the chunks it
//! queues, until the answer is complete, the body ends or the request is cancelled; and
//! [`whole_answer`], the same handler over an answer that comes in one body.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use dynamo_core::{Error, TokenChunk, TokenStream};
use futures::{Stream, StreamExt};
use hyper::body::Body;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::client::read_body;
use crate::connection::ResponseBody;
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

    /// Handle a whole answer in one body (a request sent with `"stream": false`), queueing its
    /// chunks on `out`. By default: the body as one event, then the end of the stream unless
    /// that event completed the answer.
    ///
    /// # Errors
    ///
    /// As [`on_event`](Self::on_event) and [`on_end`](Self::on_end).
    fn on_whole(&mut self, body: &str, out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        if self.on_event(body, out)? {
            Ok(())
        } else {
            self.on_end(out)
        }
    }
}

/// The [`TokenStream`] of a streamed answer whose events `handler` reads, each at most
/// `max_event` bytes; `cancel` (the request's token) ends it with [`Error::Cancelled`].
///
/// A connection that fails mid-body, or a body that ends inside an event, ends the stream with
/// `unavailable`; an event larger than `max_event` with `internal`.
pub fn event_stream<H: EventHandler>(
    body: ResponseBody,
    handler: H,
    max_event: usize,
    cancel: CancellationToken,
) -> TokenStream {
    let reader = Reader {
        body,
        decoder: SseDecoder::new(max_event),
        handler,
        pending: VecDeque::new(),
        done: false,
        error: None,
        cancel: cancel.clone(),
        cancelled: None,
    };
    TokenStream::new(reader, cancel)
}

/// The [`TokenStream`] of an answer that comes whole in `body` (at most `max_body` bytes),
/// which `handler` reads once it has all arrived ([`EventHandler::on_whole`]); its chunks are
/// merged as a streamed answer's are, usually into one. `cancel` (the request's token) ends
/// it with [`Error::Cancelled`].
///
/// A connection that fails before the body is complete ends the stream with `unavailable`; a
/// body over `max_body` bytes, or not UTF-8, with `internal`; an error the handler finds, with
/// that error and no chunk.
pub fn whole_answer<H: EventHandler>(
    body: ResponseBody,
    mut handler: H,
    max_body: usize,
    cancel: CancellationToken,
) -> TokenStream {
    let watched = cancel.clone();
    let read = async move {
        let bytes = tokio::select! {
            bytes = read_body(body, max_body) => bytes?,
            () = watched.cancelled() => return Err(Error::Cancelled),
        };
        let text = std::str::from_utf8(&bytes).map_err(|error| {
            Error::internal("the upstream's answer is not UTF-8").with_source(error)
        })?;
        let mut out = VecDeque::new();
        handler.on_whole(text, &mut out)?;
        Ok(out)
    };
    let chunks = futures::stream::once(read).flat_map(|answer| {
        let items: Vec<Result<TokenChunk, Error>> = match answer {
            Ok(mut out) => std::iter::from_fn(|| take_merged(&mut out))
                .map(Ok)
                .collect(),
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(items)
    });
    TokenStream::new(chunks, cancel)
}

/// The first chunk of `pending` with every one after it that may join it: tokens that arrived
/// together travel together, costing the gateway one pass instead of one per event.
fn take_merged(pending: &mut VecDeque<TokenChunk>) -> Option<TokenChunk> {
    let mut chunk = pending.pop_front()?;
    while let Some(next) = pending.pop_front() {
        if !mergeable(&chunk, &next) {
            pending.push_front(next);
            break;
        }
        merge(&mut chunk, next);
    }
    Some(chunk)
}

/// Whether `next` may join `chunk`: both are plain token chunks of the same choice (`next` may
/// end the answer).
fn mergeable(chunk: &TokenChunk, next: &TokenChunk) -> bool {
    let plain = |c: &TokenChunk| {
        c.log_probs.is_none()
            && c.prompt_log_probs.is_none()
            && c.kv_handoff.is_none()
            && !c.more_choices
            && c.usage.is_none()
    };
    !(!plain(chunk)
        || chunk.finish_reason.is_some()
        || next.log_probs.is_some()
        || next.prompt_log_probs.is_some()
        || next.kv_handoff.is_some()
        || next.more_choices
        || next.index != chunk.index
        // Text joins text; a text-less finish joins anything.
        || (next.text.is_some() && chunk.text.is_none())
        || (next.text.is_none() && chunk.text.is_some() && !next.tokens.is_empty()))
}

/// Add `next`'s tokens, text, finish and usage to `chunk`.
fn merge(chunk: &mut TokenChunk, next: TokenChunk) {
    chunk.tokens.extend_from_slice(&next.tokens);
    if let (Some(text), Some(more)) = (&mut chunk.text, &next.text) {
        text.push_str(more);
    }
    chunk.finish_reason = next.finish_reason;
    chunk.usage = next.usage;
}

/// The stream of [`event_stream`], polled in place: a loop over `async` reads (with
/// `futures::stream::unfold`) moved the reader, whose response body holds its connection,
/// into and out of a future at every chunk.
struct Reader<H> {
    body: ResponseBody,
    decoder: SseDecoder,
    handler: H,
    pending: VecDeque<TokenChunk>,
    /// The answer is complete, or an error ended it: nothing more is read.
    done: bool,
    /// The error that ended the answer, passed on after the queued chunks.
    error: Option<Error>,
    cancel: CancellationToken,
    /// Wakes the reader when `cancel` fires while it waits for the body; made the first time
    /// it waits.
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

// Nothing of a reader is pinned in place: it is only ever polled through `&mut`, its fields
// included (the cancellation future is pinned in its own box).
impl<H> Unpin for Reader<H> {}

impl<H: EventHandler> Stream for Reader<H> {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = take_merged(&mut this.pending) {
                return Poll::Ready(Some(Ok(chunk)));
            }
            // The chunks queued before an error go first, then the error.
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Err(error) = ready!(this.poll_read(cx)) {
                this.done = true;
                this.error = Some(error);
            }
        }
    }
}

impl<H: EventHandler> Reader<H> {
    /// Read one frame of the body and hand the events it completes to the handler; a
    /// cancelled request reads nothing more.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.cancel.is_cancelled() {
            return Poll::Ready(Err(Error::Cancelled));
        }
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let cancel = &self.cancel;
                let cancelled = self
                    .cancelled
                    .get_or_insert_with(|| Box::pin(cancel.clone().cancelled_owned()));
                return match cancelled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Error::Cancelled)),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => return Poll::Ready(Ok(())),
            },
            Some(Err(error)) => {
                let error = Error::unavailable("the upstream stream failed").with_source(error);
                return Poll::Ready(Err(error));
            }
            None => {
                self.done = true;
                if let Err(cut) = self.decoder.finish() {
                    return Poll::Ready(Err(Error::unavailable(cut.to_string())));
                }
                return Poll::Ready(self.handler.on_end(&mut self.pending));
            }
        };
        Poll::Ready(self.on_data(&data))
    }

    fn on_data(&mut self, data: &[u8]) -> Result<(), Error> {
        self.decoder
            .push(data)
            .map_err(|error| Error::internal(error.to_string()))?;
        while let Some(data) = self.decoder.next_data() {
            if self.handler.on_event(&data, &mut self.pending)? {
                self.done = true;
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{FinishReason, TokenLogProb, Usage};

    use super::*;

    fn absorb(chunk: &mut TokenChunk, next: TokenChunk) -> Result<(), ()> {
        if !mergeable(chunk, &next) {
            return Err(());
        }
        merge(chunk, next);
        Ok(())
    }

    #[test]
    fn plain_chunks_merge_and_the_finish_joins_them() {
        let mut chunk = TokenChunk::token(1);
        assert!(absorb(&mut chunk, TokenChunk::token(2)).is_ok());
        let usage = Usage {
            prompt_tokens: 3,
            cached_tokens: 0,
            completion_tokens: 2,
        };
        assert!(
            absorb(
                &mut chunk,
                TokenChunk::finish(FinishReason::Length, Some(usage))
            )
            .is_ok()
        );
        assert_eq!(chunk.tokens, [1, 2]);
        assert_eq!(chunk.finish_reason, Some(FinishReason::Length));
        assert_eq!(chunk.usage, Some(usage));
        // Nothing follows a finish.
        assert!(absorb(&mut chunk, TokenChunk::token(3)).is_err());
        // Log-probabilities stay with their tokens; text only joins text.
        let mut chunk = TokenChunk::token(1);
        let mut scored = TokenChunk::token(2);
        scored.log_probs = Some(vec![TokenLogProb {
            token: 2,
            logprob: -0.5,
            top: Vec::new(),
            rank: None,
        }]);
        assert!(absorb(&mut chunk, scored).is_err());
        let mut text = TokenChunk::token(2);
        text.text = Some("b".into());
        assert!(absorb(&mut chunk, text).is_err());
        let mut chunk = TokenChunk {
            text: Some("a".into()),
            ..TokenChunk::token(1)
        };
        let next = TokenChunk {
            text: Some("b".into()),
            ..TokenChunk::token(2)
        };
        assert!(absorb(&mut chunk, next).is_ok());
        assert!(absorb(&mut chunk, TokenChunk::token(3)).is_err());
        assert!(absorb(&mut chunk, TokenChunk::finish(FinishReason::Eos, None)).is_ok());
        assert_eq!(chunk.text.as_deref(), Some("ab"));
        assert_eq!(chunk.tokens, [1, 2]);
    }
}
