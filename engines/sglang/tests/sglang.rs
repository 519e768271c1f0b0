//! The SGLang adapter against a server replaying SGLang's wire format (`tests/fixtures`).

#[path = "../../upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;

use dynamo_core::{
    Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, SamplingOptions, Usage,
};
use dynamo_sglang::SglangServer;
use futures::StreamExt;
use replay::{Replay, fixture_bytes};
use serde_json::json;

fn request() -> GenerateRequest {
    GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198, 2683, 359, 253])
        .with_max_tokens(3)
        .with_sampling(SamplingOptions {
            temperature: Some(0.0),
            top_k: Some(1),
            ..Default::default()
        })
}

#[tokio::test]
async fn cumulative_and_incremental_streams_give_each_id_once() {
    let cases = [
        (
            "stream_cumulative.http",
            vec![378, 3575, 282],
            FinishReason::Length,
            4,
        ),
        (
            "stream_incremental.http",
            vec![378, 3575, 282],
            FinishReason::Stop,
            0,
        ),
    ];
    // The stop token that ended the second is not part of its answer; the server counts it.
    for ((fixture, tokens, finish, cached), completion) in cases.into_iter().zip([3, 4]) {
        let server = Replay::one("/generate", fixture).await;
        let sglang = SglangServer::new(&server.url()).expect("a URL");
        let answer = sglang
            .engine()
            .generate_all(request())
            .await
            .expect(fixture);
        assert_eq!(answer.tokens, tokens, "{fixture}");
        assert_eq!(answer.finish_reason, Some(finish), "{fixture}");
        let usage = answer.usage.expect("usage");
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 6,
                cached_tokens: cached,
                completion_tokens: completion
            },
            "{fixture}"
        );
        let sent = server.request_json(0);
        assert_eq!(sent["input_ids"], json!([1, 9690, 198, 2683, 359, 253]));
        assert_eq!(sent["stream"], true);
        assert_eq!(
            sent["sampling_params"],
            json!({"max_new_tokens": 3, "temperature": 0.0, "top_k": 1})
        );
        assert!(
            sent["rid"]
                .as_str()
                .is_some_and(|rid| rid.starts_with("r1-"))
        );
    }
}

#[tokio::test]
async fn a_whole_answer_is_one_call_without_streaming_and_one_chunk() {
    let server = Replay::one("/generate", "generate_whole.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut request = request();
    request.delivery = Delivery::Whole;
    let mut stream = sglang.engine().generate(request).await.expect("a stream");
    let chunk = stream.next().await.expect("a chunk").expect("tokens");
    assert!(stream.next().await.is_none(), "one chunk");
    // The matched stop token is not part of the answer.
    assert_eq!(chunk.tokens, [378, 3575, 282]);
    assert_eq!(chunk.finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        chunk.usage,
        Some(Usage {
            prompt_tokens: 6,
            cached_tokens: 4,
            completion_tokens: 4
        })
    );
    assert_eq!(server.request_json(0)["stream"], false);
}

#[tokio::test]
async fn refusals_and_aborts_keep_their_class() {
    let cases = [
        (
            "stream_error_event.http",
            ErrorClass::InvalidRequest,
            "context length",
        ),
        ("stream_abort.http", ErrorClass::Overloaded, "shutting down"),
        (
            "error_400.http",
            ErrorClass::InvalidRequest,
            "min_new_tokens",
        ),
    ];
    for (fixture, class, message) in cases {
        let server = Replay::one("/generate", fixture).await;
        let sglang = SglangServer::new(&server.url()).expect("a URL");
        let error = sglang
            .engine()
            .generate_all(request())
            .await
            .expect_err(fixture);
        assert_eq!(error.class(), class, "{fixture}: {error}");
        assert!(error.to_string().contains(message), "{fixture}: {error}");
    }
}

#[tokio::test]
async fn load_comes_from_sglang_gauges() {
    let routes = HashMap::from([("/metrics".to_owned(), fixture_bytes("metrics.http"))]);
    let server = Replay::start(routes).await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let load = sglang.load_poller().scrape().await.expect("a scrape");
    assert_eq!(
        (
            load.running_requests,
            load.waiting_requests,
            load.kv_cache_usage
        ),
        (6.0, 2.0, Some(0.42))
    );
}
