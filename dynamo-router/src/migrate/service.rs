//! [`Migrate`]: the service that continues a failed request on a new attempt.

use std::task::{Context, Poll};

use dynamo_core::{
    Disaggregation, Engine, Error, FinishReason, GenerateRequest, TokenChunk, TokenStream, Usage,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use super::continuation::{as_one_request, continuation, count};
use super::{MigrationConfig, MigrationExhausted, is_migratable};

/// An [`Engine`] that continues a request on a new attempt through the wrapped engine when an
/// attempt fails with a [migratable](super::is_migratable) error or its stream ends without a
/// last chunk; see [the module](super).
///
/// The first attempt, and those that follow a refusal before any stream, run in the call's
/// future, so an error that ends the request before its first chunk is the call's error. Once a
/// stream has started, the returned stream reads the attempts itself as the client polls it: no
/// task, no channel, and a slow client slows the worker's stream as it would without migration.
///
/// # Cancel safety
///
/// Dropping the call's future starts nothing more; dropping the returned stream, between
/// chunks or while it waits for a new attempt, drops the current attempt's stream (which
/// cancels its work) and starts no other.
#[derive(Debug, Clone)]
pub struct Migrate<S> {
    inner: S,
    config: MigrationConfig,
}

impl<S> Migrate<S> {
    /// Wrap `inner`, migrating requests as `config` says.
    pub fn new(inner: S, config: MigrationConfig) -> Self {
        Migrate { inner, config }
    }

    /// The wrapped engine.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<GenerateRequest> for Migrate<S>
where
    S: Engine + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    /// Ready when the wrapped engine is: the first attempt goes to it at once.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        // The instance polled ready takes the first attempt; its clone waits for the next.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        if self.config.limit == 0 {
            return Box::pin(ready.call(request));
        }
        let first = ready.call(request.clone());
        Box::pin(start(ready, first, Migration::new(request, self.config)))
    }
}

/// One request's progress across its attempts.
struct Migration {
    request: GenerateRequest,
    config: MigrationConfig,
    /// Every token sent to the client.
    generated: Vec<u32>,
    /// Of those, the ones the current attempt was given in its prompt.
    carried: u32,
    /// Attempts made so far, the current one included.
    attempts: u32,
    /// Attempts in a row refused before they streamed anything.
    refusals: u32,
}

impl Migration {
    fn new(request: GenerateRequest, config: MigrationConfig) -> Self {
        Migration {
            request,
            config,
            generated: Vec::new(),
            carried: 0,
            attempts: 1,
            refusals: 0,
        }
    }

    /// Note a chunk of the current attempt and make it the client's.
    fn record(&mut self, mut chunk: TokenChunk) -> TokenChunk {
        self.generated.extend_from_slice(&chunk.tokens);
        if chunk.prompt_log_probs.is_some() {
            // Given once: a continuation elsewhere does not ask for them again.
            self.request.sampling.prompt_logprobs = None;
        }
        if self.carried > 0
            && let Some(usage) = &mut chunk.usage
        {
            let prompt = count(self.request.tokens.as_slice());
            *usage = as_one_request(*usage, self.carried, usage.cached_tokens.min(prompt));
        }
        chunk
    }

    /// The last chunk of a request whose every token asked for (`max_tokens`) was streamed
    /// before its attempt failed; `None` while some are left to generate.
    fn complete(&self) -> Option<TokenChunk> {
        let max = self.request.limits.max_tokens?;
        let generated = count(&self.generated);
        (generated >= max).then(|| {
            let usage = Usage {
                prompt_tokens: count(self.request.tokens.as_slice()),
                cached_tokens: 0,
                completion_tokens: generated,
            };
            TokenChunk::finish(FinishReason::Length, Some(usage))
        })
    }

    /// The current attempt failed with `error`: `Ok` when the request may go on, or the error
    /// that ends it.
    fn failed(&mut self, error: Error) -> Result<(), Error> {
        if !is_migratable(&error) || self.request.is_cancelled() {
            return Err(error);
        }
        // Several choices interleave on one stream: what they generated is no one sequence to
        // continue from.
        if self.request.n > 1 && !self.generated.is_empty() {
            return Err(error);
        }
        if self.attempts > self.config.limit {
            record("exhausted");
            tracing::warn!(
                "request {} failed on its attempt {} and may not migrate again: {error}",
                self.request.id,
                self.attempts
            );
            let exhausted = MigrationExhausted {
                attempts: self.attempts,
                limit: self.config.limit,
                last: error,
            };
            return Err(exhausted.into_error());
        }
        record("migrated");
        tracing::warn!(
            "request {} failed on its attempt {} after {} tokens ({error}); it continues on \
             another attempt",
            self.request.id,
            self.attempts,
            self.generated.len()
        );
        self.attempts += 1;
        Ok(())
    }

    /// Start the next attempt through `inner`, after a pause when the last one was refused
    /// before it streamed: a worker whose connection was just lost may still be in the
    /// router's set until discovery removes it.
    async fn call<S>(&mut self, inner: &mut S) -> Result<TokenStream, Error>
    where
        S: Engine,
    {
        if self.refusals > 0 {
            tokio::time::sleep(self.config.backoff.saturating_mul(self.refusals)).await;
        }
        self.carried = count(&self.generated);
        let next = if self.generated.is_empty() {
            self.request.clone()
        } else {
            // A hand-over from a prefill worker covers the prompt alone: compute the rest.
            let phase = match &self.request.disaggregation {
                Disaggregation::Decode(_) => Disaggregation::None,
                other => other.clone(),
            };
            continuation(&self.request, &self.generated, phase)
        };
        let outcome = async { inner.ready().await?.call(next).await }.await;
        self.refusals = if outcome.is_ok() {
            0
        } else {
            self.refusals + 1
        };
        outcome
    }
}

/// Wait for the first attempt, and those after a refusal, then stream the attempts.
async fn start<S>(
    mut inner: S,
    first: S::Future,
    mut migration: Migration,
) -> Result<TokenStream, Error>
where
    S: Engine + Send + 'static,
    S::Future: Send + 'static,
{
    let mut outcome = first.await;
    migration.refusals = u32::from(outcome.is_err());
    let stream = loop {
        match outcome {
            Ok(stream) => break stream,
            Err(error) => migration.failed(error)?,
        }
        outcome = migration.call(&mut inner).await;
    };
    let chunks = futures::stream::unfold(Some((inner, migration, stream)), |state| async move {
        let (inner, migration, stream) = state?;
        Some(next_chunk(inner, migration, stream).await)
    });
    Ok(TokenStream::new(chunks, CancellationToken::new()))
}

/// The client's next item: the current attempt's next chunk, or, when the attempt fails, the
/// first chunk of the attempts after it; with what is left to read, unless the request ended.
async fn next_chunk<S>(
    mut inner: S,
    mut migration: Migration,
    mut stream: TokenStream,
) -> (
    Result<TokenChunk, Error>,
    Option<(S, Migration, TokenStream)>,
)
where
    S: Engine,
{
    loop {
        let failure = match stream.next().await {
            Some(Ok(chunk)) => {
                let last = chunk.is_final();
                let chunk = migration.record(chunk);
                return (Ok(chunk), (!last).then_some((inner, migration, stream)));
            }
            Some(Err(error)) => error,
            None => Error::unavailable("the worker's stream ended before its last chunk"),
        };
        // Dropping the failed attempt's stream cancels whatever is left of it.
        drop(stream);
        if is_migratable(&failure)
            && let Some(last) = migration.complete()
        {
            // Every token asked for was streamed: only the last chunk was lost.
            return (Ok(last), None);
        }
        if let Err(error) = migration.failed(failure) {
            return (Err(error), None);
        }
        stream = loop {
            match migration.call(&mut inner).await {
                Ok(stream) => break stream,
                Err(error) => {
                    if let Err(error) = migration.failed(error) {
                        return (Err(error), None);
                    }
                }
            }
        };
    }
}

fn record(outcome: &'static str) {
    metrics::counter!("dynamo_router_migrations_total", "outcome" => outcome).increment(1);
}
