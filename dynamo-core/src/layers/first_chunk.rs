//! An adapter that answers a call only once the stream's first item is known, so that a failure
//! before the first token is the call's error (what a retry policy sees).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::stream::TokenStream;

/// Wraps an engine; its call resolves when the first chunk arrives (the chunk is kept and
/// streamed first), or fails with the error the stream started with.
#[derive(Debug, Clone)]
pub(crate) struct FirstChunk<S> {
    inner: S,
}

impl<S> FirstChunk<S> {
    pub(crate) fn new(inner: S) -> Self {
        FirstChunk { inner }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<GenerateRequest> for FirstChunk<S>
where
    S: Service<GenerateRequest, Response = TokenStream, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let call = self.inner.call(request);
        async move {
            let mut stream = call.await?;
            match stream.next().await {
                // Dropping the stream here cancels the failed attempt's work.
                Some(Err(error)) => Err(error),
                Some(Ok(first)) => {
                    let rest = futures::stream::once(async move { Ok(first) }).chain(stream);
                    // The inner stream cancels its own work when dropped with `rest`.
                    Ok(TokenStream::new(rest, CancellationToken::new()))
                }
                None => Ok(stream),
            }
        }
        .boxed()
    }
}
