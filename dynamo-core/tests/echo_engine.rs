//! The echo engine driven through the public Engine API, as a user would.

use std::time::Duration;

use dynamo_core::{
    EchoEngine, EngineExt, ErrorClass, FinishReason, GenerateRequest, TokenChunk, TokenStream,
    Usage,
};
use futures::StreamExt;
use tower::ServiceExt;

fn request(tokens: Vec<u32>) -> GenerateRequest {
    GenerateRequest::new("test", "echo", tokens)
}

#[tokio::test]
async fn streams_one_token_per_chunk_then_a_final_chunk() {
    let stream = EchoEngine::new()
        .generate(request(vec![4, 5, 6]))
        .await
        .unwrap();
    let chunks: Vec<TokenChunk> = stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks.len(), 4);
    for (chunk, token) in chunks.iter().zip([4, 5, 6]) {
        assert_eq!(chunk.tokens, [token]);
        assert!(!chunk.is_final());
    }
    let last = &chunks[3];
    assert_eq!(last.finish_reason, Some(FinishReason::Eos));
    assert_eq!(
        last.usage,
        Some(Usage {
            prompt_tokens: 3,
            cached_tokens: 0,
            completion_tokens: 3
        })
    );
}

#[tokio::test]
async fn honours_max_tokens() {
    let generation = EchoEngine::new()
        .generate_all(request((0..10).collect()).with_max_tokens(4))
        .await
        .unwrap();
    assert_eq!(generation.tokens, [0, 1, 2, 3]);
    assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    assert_eq!(generation.usage.map(|u| u.completion_tokens), Some(4));
}

#[tokio::test]
async fn stop_tokens_wait_for_min_tokens() {
    let mut r = request(vec![9, 1, 9, 2, 9]).with_stop_tokens([9]);
    r.limits.min_tokens = Some(2);
    let generation = EchoEngine::new().generate_all(r).await.unwrap();
    assert_eq!(generation.tokens, [9, 1]);
    assert_eq!(generation.finish_reason, Some(FinishReason::Stop));
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_streaming() {
    let err = EchoEngine::new()
        .generate(request(vec![1]).with_max_tokens(0))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_request_ends_the_stream() {
    let r = request((0..100).collect());
    let cancel = r.cancellation().clone();
    let mut stream = EchoEngine::new()
        .with_token_delay(Duration::from_millis(10))
        .generate(r)
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().tokens, [0]);
    cancel.cancel();
    let last = stream.next().await.unwrap().unwrap();
    assert_eq!(last.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(last.usage.map(|u| u.completion_tokens), Some(1));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_attempt_but_not_the_request() {
    let r = request(vec![1, 2, 3]);
    let request_token = r.cancellation().clone();
    let stream = EchoEngine::new().generate(r).await.unwrap();
    drop(stream);
    assert!(
        !request_token.is_cancelled(),
        "a router may retry the request"
    );

    // The attempt's own token, which the engine watches, is cancelled by the drop.
    let attempt = request_token.child_token();
    let stream = TokenStream::new(futures::stream::pending(), attempt.clone());
    drop(stream);
    assert!(attempt.is_cancelled());
}

#[tokio::test]
async fn boxed_engines_clone_and_serve() {
    let engine = EchoEngine::new().boxed_engine();
    let mut a = engine.clone();
    let b = engine;
    let generation = a.generate_all(request(vec![7])).await.unwrap();
    assert_eq!(generation.tokens, [7]);
    let stream = b.oneshot(request(vec![8])).await.unwrap();
    let chunks: Vec<_> = stream.collect().await;
    assert_eq!(chunks.len(), 2);
}
