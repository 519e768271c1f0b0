//! The response of an engine: a stream of token chunks that cancels its work when dropped.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::Error;
use crate::response::TokenChunk;

/// A stream of [`TokenChunk`]s that cancels the work behind it when dropped.
///
/// An engine builds one from its chunk stream and the token its work watches. Engines should
/// watch a *child* of the request's token ([`CancellationToken::child_token`]): cancelling the
/// request then stops the work, while dropping this stream stops only this attempt, so a router
/// may retry the same request elsewhere.
///
/// # Cancel safety
///
/// Dropping the stream at any point, finished or not, cancels its token; the engine sees the
/// cancellation and frees what the request held. No chunk is lost by polling: a chunk is
/// returned exactly once.
///
/// ```
/// use dynamo_core::{TokenChunk, TokenStream};
/// use tokio_util::sync::CancellationToken;
///
/// let work = CancellationToken::new();
/// let stream = TokenStream::new(futures::stream::iter([Ok(TokenChunk::token(1))]), work.clone());
/// drop(stream);
/// assert!(work.is_cancelled());
/// ```
pub struct TokenStream {
    inner: BoxStream<'static, Result<TokenChunk, Error>>,
    cancel_on_drop: DropGuard,
}

impl TokenStream {
    /// Wrap `stream`; dropping the result cancels `cancel`.
    pub fn new<S>(stream: S, cancel: CancellationToken) -> Self
    where
        S: Stream<Item = Result<TokenChunk, Error>> + Send + 'static,
    {
        TokenStream {
            inner: Box::pin(stream),
            cancel_on_drop: cancel.drop_guard(),
        }
    }

    /// The chunks an engine's worker sends on `chunks`, in order, until it closes the channel;
    /// dropping the result cancels `cancel`. The shape of every engine that runs its
    /// generations elsewhere (a thread, a simulator, another process).
    ///
    /// ```
    /// use dynamo_core::{TokenChunk, TokenStream};
    /// use futures::StreamExt;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (sender, receiver) = tokio::sync::mpsc::channel(4);
    /// let mut stream = TokenStream::from_receiver(receiver, CancellationToken::new());
    /// sender.send(Ok(TokenChunk::token(7))).await.unwrap();
    /// drop(sender);
    /// assert_eq!(stream.next().await.unwrap().unwrap().tokens.as_slice(), [7]);
    /// assert!(stream.next().await.is_none());
    /// # }
    /// ```
    pub fn from_receiver(
        chunks: tokio::sync::mpsc::Receiver<Result<TokenChunk, Error>>,
        cancel: CancellationToken,
    ) -> Self {
        let stream = futures::stream::unfold(chunks, |mut chunks| async move {
            chunks.recv().await.map(|chunk| (chunk, chunks))
        });
        TokenStream::new(stream, cancel)
    }

    /// A stream of the given items, with a token of its own; for tests and adapters.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Result<TokenChunk, Error>>) -> Self {
        let chunks: Vec<_> = chunks.into_iter().collect();
        TokenStream::new(futures::stream::iter(chunks), CancellationToken::new())
    }
}

impl Stream for TokenStream {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStream")
            .field("cancel_on_drop", &self.cancel_on_drop)
            .finish_non_exhaustive()
    }
}
