//! The TensorRT-LLM adapter against a server replaying `trtllm-serve`'s wire format.

#[path = "../../upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;

use dynamo_core::{
    Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, OutputFormat, SamplingOptions,
};
use dynamo_trtllm::TrtllmServer;
use replay::{Replay, fixture_bytes};
use serde_json::json;

fn request() -> GenerateRequest {
    GenerateRequest::new("r1", "gateway", vec![1, 9690, 198, 2683, 359, 253])
        .with_max_tokens(8)
        .with_sampling(SamplingOptions {
            top_k: Some(4),
            seed: Some(3),
            ..Default::default()
        })
}

#[tokio::test]
async fn ids_come_from_token_ids_with_detokenize_off() {
    // Streamed, and whole in one non-streamed answer.
    for (fixture, delivery) in [
        ("stream_token_ids.http", Delivery::Streamed),
        ("whole_token_ids.http", Delivery::Whole),
    ] {
        ids_from(fixture, delivery).await;
    }
}

async fn ids_from(fixture: &str, delivery: Delivery) {
    let server = Replay::one("/v1/completions", fixture).await;
    let trtllm = TrtllmServer::new(&server.url())
        .expect("a URL")
        .model("llama");
    let mut request = request();
    request.delivery = delivery;
    let answer = trtllm.engine().generate_all(request).await.expect(fixture);
    // The stop token that ended the answer is not part of it.
    assert_eq!(answer.tokens, [378, 3575, 282]);
    assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    let usage = answer.usage.expect("usage");
    assert_eq!((usage.prompt_tokens, usage.cached_tokens), (6, 5));
    let sent = server.request_json(0);
    assert_eq!(sent["detokenize"], false);
    assert_eq!(sent["stream"], delivery == Delivery::Streamed);
    assert!(
        sent.get("return_token_ids").is_none(),
        "the server forbids unknown fields"
    );
    // It refuses stream_options without streaming.
    assert_eq!(
        sent.get("stream_options").is_some(),
        delivery == Delivery::Streamed
    );
    assert_eq!(sent["model"], "llama");
    assert_eq!(
        (sent["top_k"].clone(), sent["seed"].clone()),
        (json!(4), json!(3))
    );
}

/// A schema whose properties are not in alphabetical order, so a body that re-sorted them
/// would show.
const SCHEMA: &str = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}"#;

#[tokio::test]
async fn an_output_format_goes_as_its_response_format() {
    let server = Replay::one("/v1/completions", "whole_token_ids.http").await;
    let trtllm = TrtllmServer::new(&server.url())
        .expect("a URL")
        .model("llama");
    let mut request = GenerateRequest::new("r1", "gateway", vec![1, 9690, 198]).with_max_tokens(8);
    request.delivery = Delivery::Whole;
    request.format = Some(OutputFormat::JsonSchema {
        schema: SCHEMA.into(),
    });
    trtllm
        .engine()
        .generate_all(request.clone())
        .await
        .expect("an answer");
    // `ResponseFormat` of `tensorrt_llm/serve/openai_protocol.py`: `type: "json"` with the
    // schema in `schema`, byte for byte; the other fields as values (their order follows
    // serde_json's `preserve_order`, which the workspace's other crates turn on).
    let sent = server.request_text(0);
    let field = format!(r#""response_format":{{"type":"json","schema":{SCHEMA}}}"#);
    assert!(sent.contains(&field), "{sent}");
    let mut rest = server.request_json(0);
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("response_format");
    }
    assert_eq!(
        rest,
        json!({"detokenize": false, "max_tokens": 8, "model": "llama",
               "prompt": [1, 9690, 198], "stream": false})
    );
    request.format = Some(OutputFormat::JsonObject);
    trtllm
        .engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(
        server.request_json(1)["response_format"],
        json!({"type": "json_object"})
    );
}

/// The request of the log-probability fixtures: the chosen tokens' scores, `top`
/// alternatives each.
fn scored(top: u32, delivery: Delivery) -> GenerateRequest {
    let mut request = request();
    request.sampling.logprobs = Some(top);
    request.delivery = delivery;
    request
}

#[tokio::test]
async fn chosen_log_probabilities_are_read_beside_the_token_ids() {
    for (fixture, delivery) in [
        ("stream_logprobs.http", Delivery::Streamed),
        ("whole_logprobs.http", Delivery::Whole),
    ] {
        let server = Replay::one("/v1/completions", fixture).await;
        let trtllm = TrtllmServer::new(&server.url()).expect("a URL");
        let answer = trtllm
            .engine()
            .generate_all(scored(0, delivery))
            .await
            .expect(fixture);
        // The stop token goes, and its score with it.
        assert_eq!(answer.tokens, [378, 3575, 282], "{fixture}");
        let log_probs = answer.log_probs.expect("log-probabilities");
        let read: Vec<_> = log_probs.iter().map(|s| (s.token, s.logprob)).collect();
        assert_eq!(
            read,
            [(378, -0.125), (3575, -1.25), (282, -0.0625)],
            "{fixture}"
        );
        // The server's alternatives are keyed by text: none are passed on.
        assert!(log_probs.iter().all(|s| s.top.is_empty()), "{fixture}");
        assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
        let sent = server.request_json(0);
        // It reads `logprobs: 0` as none, so 1 is sent.
        assert_eq!(sent["logprobs"], 1, "{fixture}");
        assert!(sent.get("return_tokens_as_token_ids").is_none());
        assert_eq!(sent["detokenize"], false);
    }
}

#[tokio::test]
async fn alternatives_are_refused_and_scores_that_miss_ids_are_an_error() {
    let server = Replay::one("/v1/completions", "stream_logprobs_short.http").await;
    let trtllm = TrtllmServer::new(&server.url()).expect("a URL");
    let error = trtllm
        .engine()
        .generate(scored(2, Delivery::Streamed))
        .await
        .expect_err("alternatives refused");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("top_logprobs"), "{error}");
    assert!(
        server
            .seen
            .requests
            .lock()
            .expect("not poisoned")
            .is_empty(),
        "refused before anything is sent"
    );
    // Two new ids and one score: not passed on as if they matched.
    let error = trtllm
        .engine()
        .generate_all(scored(0, Delivery::Streamed))
        .await
        .expect_err("a mismatch");
    assert_eq!(error.class(), ErrorClass::Internal);
    assert!(error.to_string().contains("log-probabilities"), "{error}");
}

#[tokio::test]
async fn unsupported_fields_are_refused_and_errors_keep_their_message() {
    let trtllm = TrtllmServer::new("http://127.0.0.1:9").expect("a URL");
    let mut salted = request();
    salted.cache_salt = Some("tenant".into());
    let error = trtllm.engine().generate(salted).await.expect_err("refused");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("cache_salt"), "{error}");

    let server = Replay::one("/v1/completions", "error_400.http").await;
    let trtllm = TrtllmServer::new(&server.url()).expect("a URL");
    let error = trtllm.engine().generate(request()).await.expect_err("400");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(
        error.to_string().contains("Extra inputs are not permitted"),
        "{error}"
    );
}

#[tokio::test]
async fn load_comes_from_the_last_iteration() {
    let routes = HashMap::from([("/metrics".to_owned(), fixture_bytes("metrics.http"))]);
    let server = Replay::start(routes).await;
    let trtllm = TrtllmServer::new(&server.url()).expect("a URL");
    let load = trtllm.load_poller().scrape().await.expect("a scrape");
    assert_eq!(
        (
            load.running_requests,
            load.waiting_requests,
            load.kv_cache_usage
        ),
        (3.0, 4.0, Some(0.5))
    );
    // 512 blocks of 32 tokens.
    assert_eq!(load.kv_capacity_tokens, Some(16_384));
    let idle = dynamo_trtllm::read_iteration_stats(b"[]").expect("an empty list");
    assert_eq!((idle.running_requests, idle.kv_cache_usage), (0.0, None));
}
