//! The vLLM adapter against a server replaying vLLM's wire format (`tests/fixtures`): every
//! sampling field sent under vLLM's name, token ids and token-id log-probabilities back, the
//! prompt's log-probabilities from a whole answer, a stop token's finish, an older server's
//! text without ids tokenized by the gateway's tokenizer, and the load from both generations of
//! its metrics.

#[path = "../../upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_core::{
    BoxError, Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, OutputFormat,
    SamplingOptions, Token,
};
use dynamo_upstream::TextCodec;
use dynamo_vllm::{ENGINE_LABEL, VllmServer};
use futures::StreamExt;
use replay::{Replay, fixture_bytes};
use serde_json::json;

#[tokio::test]
async fn sampling_fields_go_out_under_vllm_names_and_ids_come_back() {
    let server = Replay::one("/v1/completions", "stream_token_ids.http").await;
    let vllm = VllmServer::new(&server.url())
        .expect("a URL")
        .model("smollm2");
    let mut request = GenerateRequest::new("r1", "gateway", vec![1, 9690, 198, 2683, 359, 253])
        .with_max_tokens(4)
        .with_stop_tokens(vec![2])
        .with_sampling(SamplingOptions {
            temperature: Some(0.0),
            top_p: Some(0.5),
            top_k: Some(40),
            min_p: Some(0.25),
            seed: Some(11),
            presence_penalty: Some(0.5),
            frequency_penalty: Some(-0.5),
            repetition_penalty: Some(1.25),
            logprobs: None,
            prompt_logprobs: None,
        });
    request.limits.min_tokens = Some(1);
    request.stop.ignore_eos = true;
    request.cache_salt = Some("tenant-a".into());
    let answer = vllm
        .engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(answer.tokens, [378, 3575, 282, 4649]);
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
    assert_eq!(answer.usage.map(|u| u.cached_tokens), Some(4));
    let sent = server.request_json(0);
    assert_eq!(
        sent,
        json!({
            "model": "smollm2", "prompt": [1, 9690, 198, 2683, 359, 253], "stream": true,
            "stream_options": {"include_usage": true}, "max_tokens": 4, "return_token_ids": true,
            "temperature": 0.0, "top_p": 0.5, "seed": 11, "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "top_k": 40, "min_p": 0.25, "repetition_penalty": 1.25,
            "stop_token_ids": [2], "ignore_eos": true, "min_tokens": 1, "cache_salt": "tenant-a"
        })
    );
}

/// The prompt of `live_stream_eos_usage.http`: SmolLM2's chat template around "What is the
/// capital of France?".
const FRANCE: [u32; 37] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
    198,
];

#[tokio::test]
async fn the_end_of_sequence_token_comes_with_the_finish_and_the_usage() {
    // Recorded from a live vLLM 0.32.0: its end-of-sequence token (2) in `token_ids` of the
    // event that finishes, then the usage (32 cached tokens) in an event of its own. The
    // gateway stops reading at a stop token, so a usage that came after it was lost.
    let server = Replay::one("/v1/completions", "live_stream_eos_usage.http").await;
    let vllm = VllmServer::new(&server.url())
        .expect("a URL")
        .model("smollm2");
    let request = GenerateRequest::new("r1", "gateway", FRANCE.to_vec())
        .with_max_tokens(20)
        .with_stop_tokens(vec![2]);
    let mut stream = vllm.engine().generate(request).await.expect("a stream");
    let mut tokens = Vec::new();
    // As the gateway reads: until a chunk holds a stop token, then the stream is dropped.
    let last = loop {
        let chunk = stream
            .next()
            .await
            .expect("a chunk before the stream ends")
            .expect("no error");
        tokens.extend_from_slice(&chunk.tokens);
        if chunk.tokens.contains(&2) {
            break chunk;
        }
    };
    drop(stream);
    assert_eq!(tokens, [504, 3575, 282, 4649, 314, 7042, 30, 2]);
    assert_eq!(last.finish_reason, Some(FinishReason::Eos));
    let usage = last
        .usage
        .expect("the usage with the end-of-sequence token");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens
        ),
        (37, 32, 8)
    );
}

#[tokio::test]
async fn a_live_vllms_refusals_keep_their_class_and_message() {
    // Recorded from a live vLLM 0.32.0: a prompt over --max-model-len, an unknown model.
    for (fixture, class, message) in [
        (
            "live_error_400_context_length.http",
            ErrorClass::InvalidRequest,
            "This model's maximum context length is 2048 tokens. However, your prompt contains \
             2050 input tokens, which exceeds this limit even without any output tokens. Please \
             reduce the length of the input prompt. (parameter=input_tokens, value=2050)",
        ),
        (
            "live_error_404_model.http",
            ErrorClass::NotFound,
            "The model `nope` does not exist. Valid aliases: smollm2.",
        ),
    ] {
        let server = Replay::one("/v1/completions", fixture).await;
        let vllm = VllmServer::new(&server.url()).expect("a URL");
        let error = vllm
            .engine()
            .generate_all(GenerateRequest::new("r1", "nope", vec![1, 198]).with_max_tokens(4))
            .await
            .expect_err(fixture);
        assert_eq!(error.class(), class, "{fixture}: {error}");
        assert!(error.to_string().contains(message), "{fixture}: {error}");
    }
}

/// A schema whose properties are not in alphabetical order, so a body that re-sorted them
/// would show.
const SCHEMA: &str = r#"{"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]}"#;

#[tokio::test]
async fn an_output_format_goes_as_response_format_with_the_schema_text_as_it_came() {
    let server = Replay::one("/v1/completions", "stream_token_ids.http").await;
    let vllm = VllmServer::new(&server.url())
        .expect("a URL")
        .model("smollm2");
    let mut request = GenerateRequest::new("r1", "gateway", vec![1, 9690, 198]).with_max_tokens(4);
    request.format = Some(OutputFormat::JsonSchema {
        schema: SCHEMA.into(),
    });
    vllm.engine()
        .generate_all(request.clone())
        .await
        .expect("an answer");
    // vLLM's `CompletionRequest.response_format` (`JsonSchemaResponseFormat`: `name`, and the
    // schema under `schema`), byte for byte; the other fields as values (their order follows
    // serde_json's `preserve_order`, which the workspace's other crates turn on).
    let sent = server.request_text(0);
    let field = format!(
        r#""response_format":{{"type":"json_schema","json_schema":{{"name":"output","schema":{SCHEMA}}}}}"#
    );
    assert!(sent.contains(&field), "{sent}");
    let mut rest = server.request_json(0);
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("response_format");
    }
    assert_eq!(
        rest,
        json!({"max_tokens": 4, "model": "smollm2", "prompt": [1, 9690, 198],
               "return_token_ids": true, "stream": true, "stream_options": {"include_usage": true}})
    );
    request.format = Some(OutputFormat::JsonObject);
    vllm.engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(
        server.request_json(1)["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn log_probabilities_come_back_as_token_ids() {
    let server = Replay::one("/v1/completions", "stream_logprobs_stop_token.http").await;
    let vllm = VllmServer::new(&server.url()).expect("a URL");
    let request = GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198])
        .with_max_tokens(8)
        .with_sampling(SamplingOptions {
            logprobs: Some(1),
            ..Default::default()
        });
    let answer = vllm
        .engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(answer.tokens, [7042]);
    // Stopped by a stop token (stop_reason 2), not by end of sequence.
    assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    let log_probs = answer.log_probs.expect("log-probabilities");
    assert_eq!(log_probs.len(), 1);
    assert_eq!((log_probs[0].token, log_probs[0].logprob), (7042, -0.125));
    assert_eq!(log_probs[0].top, [(7042, -0.125), (378, -2.5)]);
    // A server without --enable-prompt-tokens-details reports no cached tokens.
    assert_eq!(
        answer.usage.map(|u| (u.prompt_tokens, u.cached_tokens)),
        Some((3, 0))
    );
    let sent = server.request_json(0);
    assert_eq!(sent["logprobs"], 1);
    assert_eq!(sent["return_tokens_as_token_ids"], true);
    assert_eq!(
        sent["model"], "smollm2",
        "the request's model when none is set"
    );
}

#[tokio::test]
async fn a_whole_answer_drops_its_stop_token_with_its_log_probability() {
    // A stop token that is not a special token stays in vLLM's output, with its score.
    let server = Replay::one("/v1/completions", "whole_logprobs_stop_token.http").await;
    let vllm = VllmServer::new(&server.url()).expect("a URL");
    let mut request = GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198])
        .with_max_tokens(8)
        .with_stop_tokens(vec![13])
        .with_sampling(SamplingOptions {
            logprobs: Some(1),
            ..Default::default()
        });
    request.delivery = Delivery::Whole;
    let answer = vllm
        .engine()
        .generate_all(request)
        .await
        .expect("an answer");
    assert_eq!(answer.tokens, [7042]);
    assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    let log_probs = answer.log_probs.expect("log-probabilities");
    assert_eq!(log_probs.len(), 1, "one score a token");
    assert_eq!((log_probs[0].token, log_probs[0].logprob), (7042, -0.125));
    assert_eq!(server.request_json(0)["stream"], false);
}

/// vLLM's `prompt_logprobs`, asked for with a whole answer: per prompt token after the first,
/// the prompt token's own entry with its rank, and the alternatives asked for (the prompt
/// token among them only within the number asked for).
#[tokio::test]
async fn the_prompts_log_probabilities_come_with_a_whole_answer() {
    let server = Replay::one("/v1/completions", "whole_prompt_logprobs.http").await;
    let vllm = VllmServer::new(&server.url()).expect("a URL");
    let mut request = GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198])
        .with_max_tokens(1)
        .with_sampling(SamplingOptions {
            prompt_logprobs: Some(1),
            ..Default::default()
        });
    request.delivery = Delivery::Whole;
    let answer = vllm
        .engine()
        .generate_all(request.clone())
        .await
        .expect("an answer");
    assert_eq!(answer.tokens, [7042]);
    let scored = answer
        .prompt_log_probs
        .expect("the prompt's log-probabilities");
    assert_eq!(scored.len(), 2, "one per prompt token after the first");
    // Token 9690 ranks 4th: its own entry, and the most likely token as the one alternative.
    assert_eq!(
        (scored[0].token, scored[0].logprob, scored[0].rank),
        (9690, -3.5, Some(4))
    );
    assert_eq!(scored[0].top, [(28, -0.25)]);
    // Token 198 is the most likely: it is its own alternative.
    assert_eq!((scored[1].token, scored[1].rank), (198, Some(1)));
    assert_eq!(scored[1].top, [(198, -0.0625)]);
    let sent = server.request_json(0);
    assert_eq!(sent["prompt_logprobs"], 1);
    assert_eq!(sent["stream"], false);

    // Streamed, vLLM would refuse them: refused here before anything is sent.
    request.delivery = Delivery::Streamed;
    let refused = vllm.engine().generate(request).await;
    assert!(
        matches!(&refused, Err(error) if error.class() == ErrorClass::InvalidRequest),
        "{:?}",
        refused.err()
    );
}

#[tokio::test]
async fn load_comes_from_current_and_older_metric_names() {
    for (fixture, running, waiting, kv, capacity) in [
        ("metrics_v1.http", 5.0, 4.0, 0.625, None),
        ("metrics_v0_gpu_cache.http", 7.0, 1.0, 0.875, None),
        // Recorded from a live vLLM 0.32.0 during one long answer: beside the gauges read,
        // `vllm:num_requests_waiting_by_reason`, histograms and `_created` series, and
        // `vllm:cache_config_info` with 1,456 blocks of 32 tokens (its `kv_cache_size_tokens`
        // says 46,592 too).
        (
            "live_metrics.http",
            1.0,
            0.0,
            0.000_687_285_223_367_695_2,
            Some(46_592),
        ),
    ] {
        let routes = HashMap::from([("/metrics".to_owned(), fixture_bytes(fixture))]);
        let server = Replay::start(routes).await;
        let vllm = VllmServer::new(&server.url()).expect("a URL");
        let load = vllm.load_poller().scrape().await.expect("a scrape");
        assert_eq!(
            (
                load.running_requests,
                load.waiting_requests,
                load.kv_cache_usage,
                load.kv_capacity_tokens
            ),
            (running, waiting, Some(kv), capacity),
            "{fixture}"
        );
    }
}

/// A toy tokenizer: one token a byte.
struct Bytes;

impl TextCodec for Bytes {
    fn encode(&self, text: &str) -> Result<Vec<Token>, BoxError> {
        Ok(text.bytes().map(Token::from).collect())
    }

    fn decode(&self, tokens: &[Token]) -> Result<String, BoxError> {
        let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
        Ok(String::from_utf8(bytes)?)
    }
}

#[tokio::test]
async fn an_older_vllm_answering_text_is_tokenized_by_the_gateway() {
    // vLLM before 0.10.2 ignores return_token_ids: text only, streamed or whole.
    for (fixture, delivery) in [
        ("stream_text_only.http", Delivery::Streamed),
        ("whole_text_only.http", Delivery::Whole),
    ] {
        let server = Replay::one("/v1/completions", fixture).await;
        let mut request = GenerateRequest::new("r1", "smollm2", vec![1, 9690, 198, 2683, 359, 253])
            .with_max_tokens(4);
        request.delivery = delivery;
        // Without a tokenizer the adapter cannot make ids and says why.
        let strict = VllmServer::new(&server.url()).expect("a URL");
        let error = strict
            .engine()
            .generate_all(request.clone())
            .await
            .expect_err(fixture);
        assert_eq!(error.class(), ErrorClass::Internal, "{fixture}: {error}");
        assert!(error.to_string().contains("0.10.2"), "{fixture}: {error}");
        let lenient = VllmServer::new(&server.url())
            .expect("a URL")
            .text_codec(Arc::new(Bytes));
        let answer = lenient.engine().generate_all(request).await.expect(fixture);
        let text = " The capital of France";
        assert_eq!(
            answer.tokens,
            Bytes.encode(text).expect("bytes"),
            "{fixture}"
        );
        assert_eq!(answer.text.as_deref(), Some(text), "{fixture}");
        assert_eq!(
            answer.finish_reason,
            Some(FinishReason::Length),
            "{fixture}"
        );
        assert_eq!(answer.usage.map(|u| u.cached_tokens), Some(4), "{fixture}");
        // The ids are still asked for, in case the server has them.
        let sent = server.request_json(1);
        assert_eq!(sent["return_token_ids"], true, "{fixture}");
        assert_eq!(sent["stream"], delivery == Delivery::Streamed, "{fixture}");
    }
}

#[tokio::test]
async fn a_data_parallel_engine_is_asked_by_rank_and_read_alone() {
    // A server of two data-parallel engines: each handle's requests carry its rank, its load
    // is its engine's series of the metrics, and its events come from the rank's port.
    let routes = HashMap::from([
        (
            "/v1/completions".to_owned(),
            fixture_bytes("stream_token_ids.http"),
        ),
        ("/metrics".to_owned(), fixture_bytes("metrics_v1.http")),
    ]);
    let server = Replay::start(routes).await;
    let whole = VllmServer::new(&server.url()).expect("a URL");
    for (rank, running, waiting, kv) in [(0, 3.0, 4.0, 0.625), (1, 2.0, 0.0, 0.25)] {
        let engine = whole.clone().data_parallel_rank(rank).expect("a rank");
        assert_eq!(engine.rank(), Some(rank));
        let load = engine.load_poller().scrape().await.expect("a scrape");
        assert_eq!(
            (
                load.running_requests,
                load.waiting_requests,
                load.kv_cache_usage
            ),
            (running, waiting, Some(kv)),
            "rank {rank}"
        );
        let request = GenerateRequest::new("r1", "m", vec![1, 2, 3]).with_max_tokens(4);
        engine
            .engine()
            .generate_all(request)
            .await
            .expect("an answer");
    }
    // The whole server's handle sends no rank and reads every engine.
    let load = whole.load_poller().scrape().await.expect("a scrape");
    assert_eq!((load.running_requests, load.waiting_requests), (5.0, 4.0));
    whole
        .engine()
        .generate_all(GenerateRequest::new("r2", "m", vec![1, 2, 3]).with_max_tokens(4))
        .await
        .expect("an answer");
    let ranks = server.header_of_each("POST /v1/completions", "x-data-parallel-rank");
    assert_eq!(ranks, [Some("0".into()), Some("1".into()), None]);
    // The metrics were asked without a rank.
    let scrapes = server.header_of_each("GET /metrics", "x-data-parallel-rank");
    assert_eq!(scrapes, [None, None, None]);

    // vLLM's ports: the rank added to a TCP port, a suffix on an IPC path, rank 0 unchanged.
    let rank = |r| whole.clone().data_parallel_rank(r).expect("a rank");
    assert_eq!(
        rank(3).rank_endpoint("tcp://10.0.0.7:5557").expect("tcp"),
        "tcp://10.0.0.7:5560"
    );
    assert_eq!(
        rank(3).rank_endpoint("ipc:///tmp/kv").expect("ipc"),
        "ipc:///tmp/kv_dp3"
    );
    assert_eq!(
        rank(0).rank_endpoint("tcp://*:5557").expect("rank 0"),
        "tcp://*:5557"
    );
    for bad in ["tcp://10.0.0.7", "udp://h:1", "tcp://h:65535"] {
        let error = rank(1).rank_endpoint(bad).expect_err(bad);
        assert_eq!(error.class(), ErrorClass::InvalidRequest, "{bad}");
    }
}

#[tokio::test]
async fn one_scrape_gives_every_data_parallel_engine_its_load() {
    let server = Replay::one("/metrics", "metrics_v1.http").await;
    let whole = VllmServer::new(&server.url()).expect("a URL");
    // One scrape now, the next in an hour: every view is fed by the first.
    let (mut views, poll) = whole
        .load_poller()
        .interval(Duration::from_secs(3600))
        .start_per_series(ENGINE_LABEL, &["0", "1", "2"]);
    let poll = tokio::spawn(poll);
    assert!(views[0].changed().await && views[1].changed().await);
    let read = |view: &dynamo_upstream::LoadView| {
        view.last()
            .map(|load| (load.running_requests, load.waiting_requests))
    };
    assert_eq!(read(&views[0]), Some((3.0, 4.0)));
    assert_eq!(read(&views[1]), Some((2.0, 0.0)));
    // The server has no engine 2: its view gets no reading.
    assert_eq!(read(&views[2]), None);
    assert_eq!(server.seen.requests.lock().expect("not poisoned").len(), 1);
    // The poller stops once every view is dropped.
    drop(views);
    tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poller stopped")
        .expect("it did not panic");
}
