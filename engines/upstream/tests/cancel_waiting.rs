//! A streamed answer whose reader is waiting for the server's next event ends with
//! `cancelled` as soon as the request is cancelled, and its connection closes.

mod support;

use std::time::Duration;

use dynamo_core::{EngineExt, ErrorClass, GenerateRequest};
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, HttpClient, HttpConfig, OutputTokens,
};
use futures::StreamExt;
use support::replay::Replay;

#[tokio::test]
async fn a_reader_waiting_for_the_next_event_wakes_when_the_request_is_cancelled() {
    // The server sends one event and holds the rest.
    let server = Replay::one("/v1/completions", "vllm_stream_hold.http").await;
    let client = HttpClient::new(&server.url(), HttpConfig::default()).expect("a URL");
    let dialect = Dialect::openai()
        .named("vLLM")
        .extensions(Extensions::VLLM)
        .output(OutputTokens::TokenIdsField);
    let mut engine = CompletionsEngine::new(client, dialect).model("smollm2");
    let request = GenerateRequest::new("r1", "gateway-name", vec![1, 9690, 198]).with_max_tokens(4);
    let token = request.cancellation().clone();
    let mut stream = engine.generate(request).await.expect("a stream");
    assert!(stream.next().await.expect("a chunk").is_ok());
    let closed = server.seen.closed.notified();
    // The reader waits for an event that never comes; the cancellation alone wakes it.
    let waiting = tokio::spawn(async move { stream.next().await });
    tokio::task::yield_now().await;
    token.cancel();
    let item = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by the cancellation")
        .expect("the task ran");
    let error = item.expect("an item").expect_err("cancelled");
    assert_eq!(error.class(), ErrorClass::Cancelled);
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the server sees the connection close");
}
