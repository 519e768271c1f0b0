//! The SGLang adapter against a server replaying SGLang's wire format (`tests/fixtures`).

#[path = "../../upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;

use dynamo_core::{
    Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, OutputFormat, SamplingOptions,
    TokenLogProb, Usage,
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
        // 0.5.3: an error event with only a message, which only a request check sends.
        (
            "stream_error_event.http",
            ErrorClass::InvalidRequest,
            "context length",
        ),
        // 0.5.23: the event's code is the status.
        (
            "stream_error_event_coded.http",
            ErrorClass::InvalidRequest,
            "context length",
        ),
        // Aborts mid-stream, by their status_code, or without one.
        ("stream_abort.http", ErrorClass::Overloaded, "shutting down"),
        (
            "stream_abort_internal.http",
            ErrorClass::Internal,
            "Out of memory",
        ),
        (
            "stream_abort_unstated.http",
            ErrorClass::Unavailable,
            "Abort in waiting queue",
        ),
        // Error answers, by their HTTP status.
        (
            "error_400.http",
            ErrorClass::InvalidRequest,
            "min_new_tokens",
        ),
        (
            "error_400_contract.http",
            ErrorClass::InvalidRequest,
            "expected i64",
        ),
        (
            "error_503_abort.http",
            ErrorClass::Overloaded,
            "decode memory pressure",
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
async fn tokens_before_an_abort_come_before_its_error() {
    let server = Replay::one("/generate", "stream_abort_unstated.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut stream = sglang.engine().generate(request()).await.expect("a stream");
    let first = stream.next().await.expect("a chunk").expect("tokens");
    assert_eq!(first.tokens, [378]);
    let error = stream.next().await.expect("the end").expect_err("an abort");
    // Unavailable: the frontend's migration may continue it on another server.
    assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn an_output_format_goes_in_sampling_params_json_schema() {
    let schema = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}"#;
    let server = Replay::one("/generate", "stream_cumulative.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut request = request();
    request.format = Some(OutputFormat::JsonSchema {
        schema: schema.into(),
    });
    sglang
        .engine()
        .generate_all(request.clone())
        .await
        .expect("an answer");
    // `SamplingParams.json_schema` is text: the schema's, byte for byte.
    let quoted = serde_json::to_string(schema).expect("a string");
    let sent = server.request_text(0);
    assert!(
        sent.contains(&format!(r#""json_schema":{quoted}"#)),
        "{sent}"
    );
    // Any JSON object: the schema SGLang's own OpenAI layer sends for `json_object`.
    request.format = Some(OutputFormat::JsonObject);
    sglang
        .engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(
        server.request_json(1)["sampling_params"]["json_schema"],
        r#"{"type": "object"}"#
    );
}

#[tokio::test]
async fn a_cache_salt_is_sent_as_cache_salt_and_only_when_given() {
    let server = Replay::one("/generate", "stream_cumulative.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut salted = request();
    salted.cache_salt = Some("tenant-a".into());
    for request in [salted, request()] {
        sglang
            .engine()
            .generate_all(request)
            .await
            .expect("an answer");
    }
    assert_eq!(server.request_json(0)["cache_salt"], "tenant-a");
    let unsalted = server.request_json(1);
    assert!(unsalted.get("cache_salt").is_none(), "{unsalted}");
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
            load.kv_cache_usage,
            load.kv_capacity_tokens
        ),
        (6.0, 2.0, Some(0.42), Some(163_840))
    );
}

/// The greedy request above, asking for each token's log-probability and two alternatives.
fn scored_request() -> GenerateRequest {
    let mut request = request();
    request.sampling.logprobs = Some(2);
    request
}

/// The scores of the fixtures' first three tokens (378, 3575, 282), as SGLang wrote them.
fn expected_scores() -> Vec<TokenLogProb> {
    let score = |token, logprob, top: &[(u32, f32)]| TokenLogProb {
        token,
        logprob,
        top: top.to_vec(),
        rank: None,
    };
    vec![
        score(378, -0.125, &[(378, -0.125), (504, -2.25)]),
        score(3575, -0.5, &[(3575, -0.5), (1421, -1.5)]),
        score(282, -0.0625, &[(282, -0.0625), (314, -3.0)]),
    ]
}

#[tokio::test]
async fn streamed_log_probabilities_come_with_their_tokens() {
    // SGLang 0.5.3 streams new ids with every score so far; 0.5.23 with
    // --incremental-streaming-output slices the scores to the event's ids too.
    for fixture in ["stream_logprobs.http", "stream_logprobs_incremental.http"] {
        let server = Replay::one("/generate", fixture).await;
        let sglang = SglangServer::new(&server.url()).expect("a URL");
        let mut stream = sglang
            .engine()
            .generate(scored_request())
            .await
            .expect(fixture);
        let mut answer = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect(fixture);
            let scored = chunk.log_probs.clone().unwrap_or_default();
            // Each chunk's scores are its own tokens'.
            assert_eq!(
                scored.iter().map(|s| s.token).collect::<Vec<_>>(),
                chunk.tokens,
                "{fixture}"
            );
            answer.extend(scored);
        }
        assert_eq!(answer, expected_scores(), "{fixture}");
        let sent = server.request_json(0);
        assert_eq!(sent["return_logprob"], true);
        assert_eq!(sent["top_logprobs_num"], 2);
        assert_eq!(sent["logprob_start_len"], -1);
    }
}

#[tokio::test]
async fn a_whole_answer_scores_every_token_but_the_matched_stop_token() {
    let server = Replay::one("/generate", "generate_whole_logprobs.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut request = scored_request();
    request.delivery = Delivery::Whole;
    let mut stream = sglang.engine().generate(request).await.expect("a stream");
    let chunk = stream.next().await.expect("a chunk").expect("the answer");
    assert!(stream.next().await.is_none(), "one chunk, scores and all");
    assert_eq!(chunk.tokens, [378, 3575, 282]);
    assert_eq!(chunk.finish_reason, Some(FinishReason::Stop));
    let scored = chunk.log_probs.expect("log-probabilities");
    assert_eq!(scored, expected_scores());
    assert_eq!(server.request_json(0)["stream"], false);
}

/// The prompt's log-probabilities (`prompt_logprobs`), from SGLang 0.5.23's whole answer to a
/// request from the first prompt token (`logprob_start_len: 0`): its tokens after the first,
/// each with its score, its two alternatives and its rank where it is among them; the output's
/// scores only when asked for, with the alternatives asked for (SGLang sends as many as the
/// prompt's need).
#[tokio::test]
async fn a_whole_answer_scores_the_prompt_when_asked() {
    let score = |token, logprob, top: &[(u32, f32)], rank| TokenLogProb {
        token,
        logprob,
        top: top.to_vec(),
        rank,
    };
    let prompt_scores = vec![
        score(9690, -9.5, &[(28, -1.25), (504, -2.0)], None),
        score(198, -0.25, &[(198, -0.25), (216, -2.5)], Some(1)),
        score(2683, -6.0, &[(314, -0.5), (1421, -3.0)], None),
        score(359, -1.5, &[(30, -1.0), (359, -1.5)], Some(2)),
        score(253, -0.75, &[(253, -0.75), (260, -1.75)], Some(1)),
    ];
    let server = Replay::one("/generate", "generate_whole_prompt_logprobs.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    for (logprobs, at) in [(None, 0), (Some(1), 1)] {
        let mut request = request();
        request.delivery = Delivery::Whole;
        request.sampling.prompt_logprobs = Some(2);
        request.sampling.logprobs = logprobs;
        let mut stream = sglang.engine().generate(request).await.expect("a stream");
        let chunk = stream.next().await.expect("a chunk").expect("the answer");
        assert!(stream.next().await.is_none(), "one chunk, scores and all");
        assert_eq!(chunk.tokens, [378, 3575, 282]);
        assert_eq!(chunk.prompt_log_probs.as_ref(), Some(&prompt_scores));
        let sent = server.request_json(at);
        assert_eq!(
            [&sent["logprob_start_len"], &sent["top_logprobs_num"]],
            [&json!(0), &json!(2)]
        );
        match logprobs {
            None => assert_eq!(chunk.log_probs, None, "not asked for"),
            Some(_) => {
                let mut expected = expected_scores();
                for score in &mut expected {
                    score.top.truncate(1);
                }
                assert_eq!(chunk.log_probs, Some(expected));
            }
        }
    }

    // Streamed, they are refused before anything is sent.
    let mut streamed = request();
    streamed.sampling.prompt_logprobs = Some(2);
    let error = sglang
        .engine()
        .generate_all(streamed)
        .await
        .expect_err("streamed");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert_eq!(server.seen.requests.lock().expect("not poisoned").len(), 2);
}

#[tokio::test]
async fn a_seed_is_sent_as_sampling_seed_and_one_sglang_cannot_hold_is_refused() {
    let server = Replay::one("/generate", "stream_cumulative.http").await;
    let sglang = SglangServer::new(&server.url()).expect("a URL");
    let mut seeded = request();
    seeded.sampling.seed = Some(1234);
    sglang
        .engine()
        .generate_all(seeded.clone())
        .await
        .expect("an answer");
    let sent = server.request_json(0);
    assert_eq!(sent["sampling_params"]["sampling_seed"], 1234);

    // SGLang 0.5.3 holds the seed in 32 bits; a larger one is refused before anything is sent.
    seeded.sampling.seed = Some(1 << 31);
    let error = sglang
        .engine()
        .generate_all(seeded)
        .await
        .expect_err("a seed above 2^31 - 1");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("seed"), "{error}");
    assert_eq!(server.seen.requests.lock().expect("not poisoned").len(), 1);
}
