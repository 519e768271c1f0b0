//! The deadline layer: a request past its time ends with a timeout and its work is cancelled.
//! Virtual time throughout.

use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::layers::DeadlineLayer;
use dynamo_core::{EngineExt, Error, ErrorClass, GenerateRequest, TokenChunk, TokenStream};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service};

/// What the engine saw of each call: the timeout it was given, and a receiver that resolves
/// when the call's work is cancelled.
type Seen = (Option<Duration>, oneshot::Receiver<()>);

/// Answers at once and then emits one token a second on the paused clock (or never answers);
/// reports the timeout it was given and the moment its request is cancelled.
#[derive(Clone)]
struct Slow {
    answers: bool,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Service<GenerateRequest> for Slow {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let work = request.cancellation().child_token();
        let (cancelled, observed) = oneshot::channel();
        let watched = work.clone();
        tokio::spawn(async move {
            watched.cancelled().await;
            let _ = cancelled.send(());
        });
        let _ = self.seen.send((request.timeout, observed));
        let answers = self.answers;
        Box::pin(async move {
            if !answers {
                std::future::pending::<()>().await;
            }
            // The engine's pace: a token at each tick of a one-second clock after the first.
            let second = Duration::from_secs(1);
            let clock = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
            let tokens = futures::stream::unfold((1u32, clock), |(n, mut clock)| async move {
                clock.tick().await;
                Some((Ok(TokenChunk::token(n)), (n + 1, clock)))
            });
            let first = futures::stream::once(async { Ok(TokenChunk::token(0)) });
            Ok(TokenStream::new(first.chain(tokens), work))
        })
    }
}

fn slow(answers: bool) -> (Slow, mpsc::UnboundedReceiver<Seen>) {
    let (seen, calls) = mpsc::unbounded_channel();
    (Slow { answers, seen }, calls)
}

#[tokio::test(start_paused = true)]
async fn a_stream_past_its_deadline_ends_with_a_timeout_and_cancels_the_work() {
    let (engine, mut calls) = slow(true);
    let mut engine = DeadlineLayer::new().layer(engine);
    let request = GenerateRequest::new("r", "m", vec![1]).with_timeout(Duration::from_millis(2500));
    let mut stream = engine.generate(request).await.unwrap();
    let mut tokens = Vec::new();
    let error = loop {
        match stream.next().await {
            Some(Ok(chunk)) => tokens.extend(chunk.tokens),
            Some(Err(error)) => break error,
            None => panic!("the stream ended without the timeout"),
        }
    };
    assert_eq!(tokens, [0, 1, 2]);
    assert_eq!(error.class(), ErrorClass::Timeout);
    assert!(
        matches!(error, Error::Timeout { after: Some(after) } if after == Duration::from_millis(2500))
    );
    assert!(stream.next().await.is_none(), "nothing after the timeout");
    let (timeout, observed) = calls.recv().await.unwrap();
    assert_eq!(timeout, Some(Duration::from_millis(2500)));
    observed.await.expect("the engine sees its work cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_the_first_answer_fails_the_call() {
    let (engine, mut calls) = slow(false);
    let mut engine = DeadlineLayer::new()
        .default_timeout(Duration::from_secs(10))
        .layer(engine);
    let request = GenerateRequest::new("r", "m", vec![1]).with_timeout(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let error = engine.generate(request).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Timeout);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "the shorter timeout wins"
    );
    let (timeout, observed) = calls.recv().await.unwrap();
    assert_eq!(
        timeout,
        Some(Duration::from_secs(10)),
        "the worker is told what is left"
    );
    observed.await.expect("the engine sees its work cancelled");
}

#[tokio::test(start_paused = true)]
async fn requests_within_their_deadline_are_untouched() {
    let (engine, _calls) = slow(true);
    let mut engine = DeadlineLayer::new().layer(engine);
    let request = GenerateRequest::new("r", "m", vec![1]);
    let mut stream = engine.generate(request).await.unwrap();
    // No deadline: a minute of tokens arrive.
    let tokens: Vec<_> = (&mut stream).take(60).collect().await;
    assert!(tokens.iter().all(Result::is_ok));
}

#[test]
fn the_timeout_crosses_the_wire_and_old_peers_understand_each_other() {
    let plain = GenerateRequest::new("r", "m", vec![1]);
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("timeout").is_none(), "omitted when unset: {json}");
    let timed = plain.with_timeout(Duration::from_millis(1500));
    let back: GenerateRequest =
        serde_json::from_value(serde_json::to_value(&timed).unwrap()).unwrap();
    assert_eq!(back.timeout, Some(Duration::from_millis(1500)));
}
