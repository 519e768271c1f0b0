//! The live simulated engine, in paused time: streaming, pacing, cancellation, KV events.

use std::time::Duration;

use dynamo_core::{EngineExt, FinishReason, GenerateRequest, KvEventData};
use dynamo_mocker::{LiveConfig, LiveEngine, PolynomialTiming};
use futures::StreamExt;
use tokio::sync::mpsc;

fn prompt(id: &str, len: u32, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new(id, "sim", (0..len).collect::<Vec<u32>>()).with_max_tokens(max_tokens)
}

#[tokio::test(start_paused = true)]
async fn streams_its_output_length_at_the_timing_models_pace_and_reports_events() {
    let (events, mut received) = mpsc::channel(64);
    let (mut engine, worker) = LiveEngine::new(
        LiveConfig::default(),
        PolynomialTiming::default(),
        Some(events),
    );
    tokio::spawn(worker);
    let start = tokio::time::Instant::now();
    let generation = engine.generate_all(prompt("a", 1000, 5)).await.unwrap();
    assert_eq!(generation.tokens.len(), 5);
    assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    let usage = generation.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1000, 5));
    // One prefill step (about 32 ms for 1000 tokens) and four decode steps (about 6 ms each).
    let elapsed = start.elapsed();
    assert!(
        elapsed > Duration::from_millis(50) && elapsed < Duration::from_millis(70),
        "{elapsed:?}"
    );
    let stored = received.recv().await.unwrap();
    assert!(matches!(stored.data, KvEventData::Stored { ref blocks, .. } if blocks.len() == 15));

    // The same prompt again finds its blocks cached.
    let again = engine.generate_all(prompt("b", 1000, 2)).await.unwrap();
    assert_eq!(again.usage.unwrap().cached_tokens, 960);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_cancels_the_request_and_frees_its_blocks() {
    let (mut engine, worker) =
        LiveEngine::new(LiveConfig::default(), PolynomialTiming::default(), None);
    tokio::spawn(worker);
    let mut stream = engine.generate(prompt("long", 640, 1000)).await.unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    assert_eq!(engine.metrics().running, 1);
    assert!(engine.metrics().blocks_in_use >= 10);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A later request's steps show the worker without the cancelled one.
    engine.generate_all(prompt("next", 8, 1)).await.unwrap();
    let metrics = engine.metrics();
    assert_eq!(
        (metrics.running, metrics.waiting, metrics.blocks_in_use),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn refuses_an_output_format_it_cannot_enforce() {
    let (mut engine, worker) =
        LiveEngine::new(LiveConfig::default(), PolynomialTiming::default(), None);
    tokio::spawn(worker);
    let mut request = prompt("json", 8, 4);
    request.format = Some(dynamo_core::OutputFormat::JsonObject);
    let error = engine.generate_all(request).await.unwrap_err();
    assert_eq!(error.class(), dynamo_core::ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("response_format"), "{error}");
}
