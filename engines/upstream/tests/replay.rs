//! The upstream engine against a server replaying fixtures byte for byte: streamed token ids
//! and usage, whole (non-streamed) answers, a stream or an answer cut mid-chunk, an error event
//! mid-stream, error statuses, cancellation, and a metrics scrape with labels. `tests/fixtures/README.md` says where each comes from.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use dynamo_core::{
    Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, OutputFormat, Usage,
};
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, FormatField, HttpClient, HttpConfig, LoadMetrics,
    MetricsPoller, OutputTokens,
};
use futures::StreamExt;
use serde_json::json;
use support::replay::{Replay, fixture_bytes};

fn vllm_engine(url: &str) -> CompletionsEngine {
    let client = HttpClient::new(url, HttpConfig::default()).expect("a URL");
    let dialect = Dialect::openai()
        .named("vLLM")
        .extensions(Extensions::VLLM)
        .output(OutputTokens::TokenIdsField);
    CompletionsEngine::new(client, dialect).model("smollm2")
}

fn request() -> GenerateRequest {
    GenerateRequest::new("r1", "gateway-name", vec![1, 9690, 198, 2683, 359, 253])
        .with_max_tokens(4)
}

/// The same request, from a client that reads the answer whole.
fn whole() -> GenerateRequest {
    let mut request = request();
    request.delivery = Delivery::Whole;
    request
}

#[tokio::test]
async fn a_whole_answer_is_one_call_without_streaming_and_one_chunk() {
    let server = Replay::one("/v1/completions", "vllm_whole_token_ids.http").await;
    let mut stream = vllm_engine(&server.url())
        .generate(whole())
        .await
        .expect("a stream");
    let chunk = stream.next().await.expect("a chunk").expect("tokens");
    assert!(stream.next().await.is_none(), "one chunk");
    assert_eq!(chunk.tokens, [378, 3575, 282, 4649]);
    assert_eq!(chunk.text.as_deref(), Some(" The capital of France"));
    assert_eq!(chunk.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        chunk.usage,
        Some(Usage {
            prompt_tokens: 6,
            cached_tokens: 4,
            completion_tokens: 4
        })
    );
    let sent = server.request_json(0);
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stream_options").is_none(), "{sent}");
    assert_eq!(sent["return_token_ids"], true);
    assert_eq!(sent["prompt"], json!([1, 9690, 198, 2683, 359, 253]));
}

#[tokio::test]
async fn a_whole_answer_cut_mid_body_is_unavailable() {
    let server = Replay::one("/v1/completions", "vllm_whole_cut.http").await;
    let mut stream = vllm_engine(&server.url())
        .generate(whole())
        .await
        .expect("a stream");
    let error = stream.next().await.expect("an item").expect_err("cut");
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_stream_of_token_ids_ends_with_the_finish_and_the_usage() {
    let server = Replay::one("/v1/completions", "vllm_stream_token_ids.http").await;
    let mut engine = vllm_engine(&server.url());
    let mut stream = engine.generate(request()).await.expect("a stream");
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.expect("a chunk"));
    }
    let tokens: Vec<_> = chunks.iter().map(|c| c.tokens.clone()).collect();
    // The tokens of the finishing event come with the finish and the usage.
    assert_eq!(tokens, [vec![378], vec![3575], vec![282, 4649]]);
    let last = chunks.last().expect("a last chunk");
    assert_eq!(last.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        last.usage,
        Some(Usage {
            prompt_tokens: 6,
            cached_tokens: 4,
            completion_tokens: 4
        })
    );
    let text: String = chunks.iter().filter_map(|c| c.text.clone()).collect();
    assert_eq!(text, " The capital of France");
    // The request went out field by field, under the server's model name.
    let sent = server.request_json(0);
    assert_eq!(sent["model"], "smollm2");
    assert_eq!(sent["prompt"], json!([1, 9690, 198, 2683, 359, 253]));
    assert_eq!(sent["max_tokens"], 4);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["return_token_ids"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn a_stream_cut_mid_chunk_ends_unavailable_after_its_tokens() {
    let server = Replay::one("/v1/completions", "vllm_stream_cut.http").await;
    let mut stream = vllm_engine(&server.url())
        .generate(request())
        .await
        .expect("a stream");
    let first = stream.next().await.expect("a chunk").expect("tokens");
    assert_eq!(first.tokens, [378]);
    let error = stream.next().await.expect("an item").expect_err("cut");
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn an_error_event_mid_stream_keeps_its_class() {
    let server = Replay::one("/v1/completions", "vllm_stream_error_event.http").await;
    let error = vllm_engine(&server.url())
        .generate_all(request())
        .await
        .expect_err("an error event");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(
        error.to_string().contains("maximum context length"),
        "{error}"
    );
}

#[tokio::test]
async fn error_statuses_map_to_classes_with_their_messages() {
    let cases = [
        (
            "vllm_error_400.http",
            ErrorClass::InvalidRequest,
            "top_p must be in (0, 1]",
        ),
        (
            "vllm_error_404.http",
            ErrorClass::NotFound,
            "does not exist",
        ),
        ("overloaded_503.http", ErrorClass::Overloaded, "at capacity"),
    ];
    // Streamed or whole, the status decides.
    for ((fixture, class, message), request) in cases
        .into_iter()
        .flat_map(|case| [(case, request()), (case, whole())])
    {
        let server = Replay::one("/v1/completions", fixture).await;
        let error = vllm_engine(&server.url())
            .generate(request)
            .await
            .expect_err(fixture);
        assert_eq!(error.class(), class, "{fixture}: {error}");
        assert!(error.to_string().contains(message), "{fixture}: {error}");
        if class == ErrorClass::Overloaded {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        }
    }
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    // Bind a port, then free it: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("bound");
    drop(listener);
    let error = vllm_engine(&format!("http://{address}"))
        .generate(request())
        .await
        .expect_err("refused");
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let server = Replay::one("/v1/completions", "vllm_stream_hold.http").await;
    let mut stream = vllm_engine(&server.url())
        .generate(request())
        .await
        .expect("a stream");
    assert_eq!(
        stream.next().await.expect("a chunk").expect("ok").tokens,
        [378]
    );
    let closed = server.seen.closed.notified();
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the server sees the connection close");
}

#[tokio::test]
async fn cancelling_the_request_ends_the_stream_and_the_connection() {
    // The server sends one event and holds the rest: a streamed answer passes it on, a whole
    // one waits for the rest.
    for request in [request(), whole()] {
        cancel_mid_answer(request).await;
    }
}

async fn cancel_mid_answer(request: GenerateRequest) {
    let server = Replay::one("/v1/completions", "vllm_stream_hold.http").await;
    let streamed = request.delivery == Delivery::Streamed;
    let token = request.cancellation().clone();
    let mut stream = vllm_engine(&server.url())
        .generate(request)
        .await
        .expect("a stream");
    if streamed {
        assert!(stream.next().await.expect("a chunk").is_ok());
    }
    let closed = server.seen.closed.notified();
    token.cancel();
    let error = stream
        .next()
        .await
        .expect("an item")
        .expect_err("cancelled");
    assert_eq!(error.class(), ErrorClass::Cancelled);
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the server sees the connection close");
}

#[tokio::test]
async fn unsupported_fields_are_refused_before_sending() {
    let server = Replay::one("/v1/completions", "vllm_stream_token_ids.http").await;
    let client = HttpClient::new(&server.url(), HttpConfig::default()).expect("a URL");
    let mut engine = CompletionsEngine::new(client, Dialect::openai());
    let mut request = request();
    request.stop.ignore_eos = true;
    let error = engine.generate(request).await.expect_err("refused");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("ignore_eos"), "{error}");
    assert!(
        server
            .seen
            .requests
            .lock()
            .expect("not poisoned")
            .is_empty()
    );
}

#[tokio::test]
async fn an_output_format_is_refused_unless_the_server_takes_one() {
    let server = Replay::one("/v1/completions", "vllm_whole_token_ids.http").await;
    let client = HttpClient::new(&server.url(), HttpConfig::default()).expect("a URL");
    let mut request = whole();
    request.format = Some(OutputFormat::JsonObject);
    // OpenAI's own `/v1/completions` takes no `response_format`: refused, nothing sent.
    let mut plain = CompletionsEngine::new(client.clone(), Dialect::openai());
    let error = plain.generate(request.clone()).await.expect_err("refused");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("response_format"), "{error}");
    assert!(
        server
            .seen
            .requests
            .lock()
            .expect("not poisoned")
            .is_empty()
    );
    // A server said to enforce OpenAI's `response_format` gets it.
    let dialect = Dialect::openai().extensions(Extensions {
        response_format: FormatField::OpenAi,
        ..Extensions::default()
    });
    let mut enforcing = CompletionsEngine::new(client, dialect);
    enforcing.generate_all(request).await.expect("an answer");
    assert_eq!(
        server.request_json(0)["response_format"],
        json!({"type": "json_object"})
    );
}

fn vllm_metrics() -> LoadMetrics {
    LoadMetrics {
        running: vec!["vllm:num_requests_running".into()],
        waiting: vec!["vllm:num_requests_waiting".into()],
        kv_usage: vec![
            "vllm:kv_cache_usage_perc".into(),
            "vllm:gpu_cache_usage_perc".into(),
        ],
        kv_usage_scale: 1.0,
        kv_capacity: vec![],
        series: None,
    }
}

#[tokio::test]
async fn the_poller_sums_labelled_series_and_goes_stale() {
    let server = Replay::start(HashMap::from([(
        "/metrics".to_owned(),
        fixture_bytes("vllm_metrics.http"),
    )]))
    .await;
    let client = HttpClient::new(&server.url(), HttpConfig::default()).expect("a URL");
    let poller = MetricsPoller::new(client, vllm_metrics())
        .interval(Duration::from_millis(20))
        .staleness(Duration::from_millis(500));
    let load = poller.scrape().await.expect("a scrape");
    assert_eq!(load.running_requests, 5.0);
    assert_eq!(load.waiting_requests, 4.0);
    assert_eq!(load.kv_cache_usage, Some(0.625));
    let (mut view, poll) = poller.start();
    let task = tokio::spawn(poll);
    assert!(view.changed().await);
    assert_eq!(view.current().map(|l| l.running_requests), Some(5.0));
    // The server goes away: the last load stays readable but is no longer current.
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while view.current().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never went stale"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(view.last().is_some());
    drop(view);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the poller ends with its last view")
        .expect("no panic");
}
