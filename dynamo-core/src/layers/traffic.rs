//! [`TrafficLayer`]: what the requests through an engine show a planner, counted as they pass.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use crate::error::Error;
use crate::request::GenerateRequest;
use crate::response::TokenChunk;
use crate::stream::TokenStream;

/// The traffic of an engine over some interval: sums, so that reports of several frontends
/// (or several intervals) add up with [`merge`](TrafficReport::merge).
///
/// A frontend publishes one per interval (`dynamo-serve frontend` on NATS, every second); a
/// planner turns the sum of an interval's reports into request rate, prompt and output lengths,
/// cache hit rate, time to first token and time between tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// Requests that arrived.
    pub requests: u64,
    /// Their prompt tokens.
    pub prompt_tokens: u64,
    /// Requests that ended: answered whole, failed, or dropped by their client.
    pub finished: u64,
    /// The prompt tokens of the requests that ended.
    pub finished_prompt_tokens: u64,
    /// Of those, the ones an engine found in a cache (its usage's `cached_tokens`).
    pub cached_tokens: u64,
    /// The output tokens of the requests that ended.
    pub output_tokens: u64,
    /// Requests whose first token came.
    pub first_tokens: u64,
    /// The sum of their times from the call to the first token, in milliseconds.
    pub ttft_ms_total: f64,
    /// Requests that ended with two output tokens or more.
    pub itl_requests: u64,
    /// The sum of their mean times between output tokens, in milliseconds.
    pub itl_ms_total: f64,
}

impl TrafficReport {
    /// Add `other`'s counts to these (saturating: a report read from the network may hold any
    /// numbers).
    pub fn merge(&mut self, other: &TrafficReport) {
        let counts = [
            (&mut self.requests, other.requests),
            (&mut self.prompt_tokens, other.prompt_tokens),
            (&mut self.finished, other.finished),
            (
                &mut self.finished_prompt_tokens,
                other.finished_prompt_tokens,
            ),
            (&mut self.cached_tokens, other.cached_tokens),
            (&mut self.output_tokens, other.output_tokens),
            (&mut self.first_tokens, other.first_tokens),
            (&mut self.itl_requests, other.itl_requests),
        ];
        for (count, more) in counts {
            *count = count.saturating_add(more);
        }
        self.ttft_ms_total += other.ttft_ms_total;
        self.itl_ms_total += other.itl_ms_total;
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.finished == 0 && self.first_tokens == 0
    }
}

/// The counts a [`TrafficLayer`] keeps, shared by every clone: take them once per interval.
///
/// ```
/// use dynamo_core::layers::Traffic;
/// use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
/// use tower::Layer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let traffic = Traffic::new();
/// let mut engine = traffic.layer().layer(EchoEngine::new()).boxed_engine();
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3]).with_max_tokens(2);
/// engine.generate_all(request).await?;
/// let report = traffic.take();
/// assert_eq!((report.requests, report.prompt_tokens, report.output_tokens), (1, 3, 2));
/// assert!(traffic.take().is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    counts: Arc<Mutex<TrafficReport>>,
}

impl Traffic {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Traffic::default()
    }

    /// A layer that counts into these.
    pub fn layer(&self) -> TrafficLayer {
        TrafficLayer {
            traffic: self.clone(),
        }
    }

    /// What was counted since the last take; the counts start again from zero.
    pub fn take(&self) -> TrafficReport {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrafficReport> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the requests through an engine into a [`Traffic`]: see [`Traffic`] for an example.
#[derive(Debug, Clone)]
pub struct TrafficLayer {
    traffic: Traffic,
}

impl<S> Layer<S> for TrafficLayer {
    type Service = TrafficMeter<S>;

    fn layer(&self, inner: S) -> TrafficMeter<S> {
        TrafficMeter {
            inner,
            traffic: self.traffic.clone(),
        }
    }
}

/// An engine that counts its requests: on the call, the request and its prompt; on the first
/// token, the time to it; when the stream ends (or is dropped), the output tokens, the cached
/// prompt tokens the usage reports and the mean time between tokens.
#[derive(Debug, Clone)]
pub struct TrafficMeter<S> {
    inner: S,
    traffic: Traffic,
}

impl<S> Service<GenerateRequest> for TrafficMeter<S>
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
        let prompt_tokens = request.tokens.len() as u64;
        {
            let mut counts = self.traffic.lock();
            counts.requests += 1;
            counts.prompt_tokens += prompt_tokens;
        }
        let mut metered = Metered {
            inner: None,
            traffic: self.traffic.clone(),
            called: Instant::now(),
            first: None,
            last: None,
            tokens: 0,
            prompt_tokens,
            cached_tokens: 0,
            ended: false,
        };
        let call = self.inner.call(request);
        async move {
            // A failed call ends the request here (`metered` is dropped).
            metered.inner = Some(call.await?);
            // The inner stream cancels its own work when dropped with the meter.
            Ok(TokenStream::new(metered, CancellationToken::new()))
        }
        .boxed()
    }
}

/// A request's stream, counted as it goes.
struct Metered {
    inner: Option<TokenStream>,
    traffic: Traffic,
    called: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    tokens: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    ended: bool,
}

impl Metered {
    fn saw(&mut self, chunk: &TokenChunk) {
        if let Some(usage) = &chunk.usage {
            self.cached_tokens = u64::from(usage.cached_tokens);
        }
        if chunk.tokens.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            let ttft = now.duration_since(self.called).as_secs_f64() * 1e3;
            let mut counts = self.traffic.lock();
            counts.first_tokens += 1;
            counts.ttft_ms_total += ttft;
        }
        self.last = Some(now);
        self.tokens += chunk.tokens.len() as u64;
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut counts = self.traffic.lock();
        counts.finished += 1;
        counts.finished_prompt_tokens += self.prompt_tokens;
        counts.cached_tokens += self.cached_tokens.min(self.prompt_tokens);
        counts.output_tokens += self.tokens;
        if let (Some(first), Some(last)) = (self.first, self.last)
            && self.tokens >= 2
        {
            let gaps = (self.tokens - 1) as f64;
            counts.itl_requests += 1;
            counts.itl_ms_total += last.duration_since(first).as_secs_f64() * 1e3 / gaps;
        }
    }
}

impl Stream for Metered {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = std::task::ready!(Pin::new(inner).poll_next(cx));
        match &item {
            Some(Ok(chunk)) => self.saw(chunk),
            Some(Err(_)) | None => self.end(),
        }
        Poll::Ready(item)
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::response::{FinishReason, Usage};
    use crate::{EngineExt, Token};
    use futures::StreamExt;

    /// An engine answering every request with `tokens`, one chunk each `every`, and a usage
    /// with `cached` prompt tokens.
    #[derive(Clone)]
    struct Paced {
        tokens: Vec<Token>,
        every: Duration,
        cached: u32,
    }

    impl Service<GenerateRequest> for Paced {
        type Response = TokenStream;
        type Error = Error;
        type Future = BoxFuture<'static, Result<TokenStream, Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: GenerateRequest) -> Self::Future {
            let (tokens, every, cached) = (self.tokens.clone(), self.every, self.cached);
            let prompt = request.tokens.len() as u32;
            async move {
                let chunks = futures::stream::iter(tokens.clone()).then(move |token| async move {
                    tokio::time::sleep(every).await;
                    Ok(TokenChunk::token(token))
                });
                let usage = Usage {
                    prompt_tokens: prompt,
                    cached_tokens: cached,
                    completion_tokens: tokens.len() as u32,
                };
                let finish = futures::stream::once(async move {
                    Ok(TokenChunk::finish(FinishReason::Length, Some(usage)))
                });
                Ok(TokenStream::new(
                    chunks.chain(finish),
                    CancellationToken::new(),
                ))
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn times_and_counts_are_those_of_the_streams() {
        let traffic = Traffic::new();
        let paced = Paced {
            tokens: vec![5, 6, 7, 8, 9],
            every: Duration::from_millis(20),
            cached: 16,
        };
        let mut engine = traffic.layer().layer(paced).boxed_engine();
        for id in ["a", "b"] {
            let request = GenerateRequest::new(id, "m", vec![1; 32]);
            engine.generate_all(request).await.expect("an answer");
        }
        // One more, dropped after its first token.
        let request = GenerateRequest::new("c", "m", vec![1; 8]);
        let mut stream = engine.generate(request).await.expect("a stream");
        stream.next().await.expect("a chunk").expect("a token");
        drop(stream);

        let report = traffic.take();
        assert_eq!((report.requests, report.prompt_tokens), (3, 72));
        assert_eq!((report.finished, report.finished_prompt_tokens), (3, 72));
        // The dropped request's usage never came: none of its prompt counts as cached.
        assert_eq!(report.cached_tokens, 32);
        assert_eq!(report.output_tokens, 11);
        assert_eq!((report.first_tokens, report.itl_requests), (3, 2));
        assert!((report.ttft_ms_total - 60.0).abs() < 1e-6, "{report:?}");
        assert!((report.itl_ms_total - 40.0).abs() < 1e-6, "{report:?}");
        assert!(traffic.take().is_empty());

        let mut merged = report.clone();
        merged.merge(&report);
        assert_eq!((merged.requests, merged.itl_ms_total), (6, 80.0));
        let huge = TrafficReport {
            requests: u64::MAX,
            ..TrafficReport::default()
        };
        merged.merge(&huge);
        assert_eq!(merged.requests, u64::MAX);
    }
}
