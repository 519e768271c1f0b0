//! `dynamo-serve frontend --engine-at`, and the upstream adapters under it, against real
//! processes: our own main job (the real SmolLM2 model behind an OpenAI-compatible server) as
//! the upstream of the generic adapter, and a server replaying vLLM's wire format
//! (`engines/upstream/tests/fixtures`, `engines/vllm/tests/fixtures`) as a vLLM server.

#[expect(dead_code, reason = "these tests use part of the shared support")]
mod support;

#[path = "../../engines/upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;
use std::time::Duration;

use dynamo_core::{EngineExt, ErrorClass, GenerateRequest, SamplingOptions};
use dynamo_transport::local::free_port;
use dynamo_upstream::{CompletionsEngine, Dialect, HttpClient, HttpConfig};
use futures::StreamExt;
use replay::Replay;
use serde_json::{Value, json};
use support::{Frontend, Process};

const QUESTION: &str = "What is the capital of France?";

fn greedy(tokens: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new("r", "smollm2", tokens)
        .with_max_tokens(max_tokens)
        .with_sampling(SamplingOptions {
            temperature: Some(0.0),
            ..Default::default()
        })
}

async fn chat_prompt_ids(server: &Frontend) -> Vec<u32> {
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}]});
    let response = server.post("/tokenize", &body).await;
    assert_eq!(response.status().as_u16(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("a body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    serde_json::from_value(answer["tokens"].clone()).expect("token ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_adapter_and_a_frontend_front_a_real_openai_compatible_server() {
    let upstream_port = free_port().expect("a free port");
    let _upstream_process =
        Process::start(&["--port", &upstream_port.to_string(), "--workers", "1"]);
    let upstream = Frontend::new(upstream_port);
    upstream.wait_ready().await;
    let url = format!("http://127.0.0.1:{upstream_port}");

    // The adapter alone: token ids in, the server's text out, its usage with cached tokens.
    let client = HttpClient::new(&url, HttpConfig::default()).expect("a URL");
    let mut engine = CompletionsEngine::new(client, Dialect::openai());
    let prompt = chat_prompt_ids(&upstream).await;
    let first = engine
        .generate_all(greedy(prompt.clone(), 12))
        .await
        .expect("an answer");
    let text = first.text.clone().unwrap_or_default();
    assert!(text.contains("Paris"), "{text:?}");
    let usage = first.usage.expect("usage");
    assert_eq!(usage.prompt_tokens as usize, prompt.len());
    let again = engine
        .generate_all(greedy(prompt.clone(), 12))
        .await
        .expect("an answer");
    assert_eq!(again.text, first.text);
    let cached = again.usage.expect("usage").cached_tokens;
    assert!(
        cached > 0,
        "the repeated prompt's blocks come from the cache"
    );

    // The server's refusals keep their class: an unknown model, a value out of its range.
    let mut unknown = greedy(prompt.clone(), 4);
    unknown.model = "no-such-model".into();
    let error = engine.generate(unknown).await.expect_err("unknown model");
    assert_eq!(error.class(), ErrorClass::NotFound, "{error}");
    let mut hot = greedy(prompt.clone(), 4);
    hot.sampling.temperature = Some(5.0);
    let error = engine.generate(hot).await.expect_err("out of range");
    assert_eq!(error.class(), ErrorClass::InvalidRequest, "{error}");

    // Dropping a stream mid-answer frees the server for the next request.
    let mut stream = engine
        .generate(greedy(prompt.clone(), 200))
        .await
        .expect("a stream");
    assert!(stream.next().await.expect("a chunk").is_ok());
    drop(stream);
    let after = engine
        .generate_all(greedy(prompt.clone(), 12))
        .await
        .expect("an answer");
    assert_eq!(after.text, first.text);

    // A frontend with that server as an engine: the gateway's chat template and detokenizer,
    // the server's compute.
    let (_frontend_process, frontend) =
        support::engine_frontend_routed(&[format!("openai={url}")], "approx-kv").await;
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "temperature": 0
    });
    let response = frontend.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status().as_u16(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("a body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(content, text, "the frontend answers as the server does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_fronts_a_vllm_server_with_token_ids_and_its_errors() {
    // The client does not stream, so neither does the frontend's call to the server.
    let stream = replay_of("vllm_whole_token_ids.http").await;
    let refusing = replay_of("vllm_error_400.http").await;
    let engine = format!("vllm={},model=served-smollm2", stream.url());
    let (process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    process
        .wait_for("routing to an engine server", Duration::from_secs(10))
        .await;
    let (status, answer) = frontend
        .complete_with(&json!({"model": "smollm2", "prompt": "Hi", "max_tokens": 4}))
        .await;
    assert_eq!(status, 200, "{answer}");
    // The replayed ids, detokenized by the gateway.
    let (status, expected) = frontend_detokenize(&frontend, &[378, 3575, 282, 4649]).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["text"], expected["prompt"]);
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    let sent = posted(&stream);
    assert_eq!(sent["model"], "served-smollm2");
    assert_eq!(sent["return_token_ids"], true);
    assert_eq!(sent["max_tokens"], 4);
    assert_eq!(sent["stream"], false);

    let engine = format!("vllm={}", refusing.url());
    let (_refusing_frontend, frontend) =
        support::engine_frontend_routed(&[engine], "round-robin").await;
    let (status, answer) = frontend
        .complete_with(&json!({"model": "smollm2", "prompt": "Hi", "max_tokens": 4}))
        .await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("top_p must be in (0, 1]"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_steers_requests_away_from_a_server_that_reports_a_queue() {
    // Two vLLM servers answering alike; the first reports 8 running and 8 waiting requests
    // (other clients' work the router did not book), the second none.
    let metrics = |running: u32, waiting: u32| {
        format!(
            "HTTP/1.1 200 OK\ncontent-type: text/plain; version=0.0.4\n\n\
             vllm:num_requests_running{{engine=\"0\"}} {running}\n\
             vllm:num_requests_waiting{{engine=\"0\"}} {waiting}\n\
             vllm:kv_cache_usage_perc{{engine=\"0\"}} 0.5\n"
        )
        .into_bytes()
    };
    let answer = std::fs::read(
        replay::package_dir().join("../engines/upstream/tests/fixtures/vllm_whole_token_ids.http"),
    )
    .expect("the fixture");
    let server = |load: Vec<u8>| {
        Replay::start(HashMap::from([
            ("/v1/completions".to_owned(), answer.clone()),
            ("/metrics".to_owned(), load),
        ]))
    };
    let busy = server(metrics(8, 8)).await;
    let idle = server(metrics(0, 0)).await;
    let engines = [
        format!("vllm={},id=1", busy.url()),
        format!("vllm={},id=2", idle.url()),
    ];
    let (_process, frontend) = support::engine_frontend_routed(&engines, "approx-kv").await;
    // Wait until both servers' loads have been read (the frontend exports them).
    let read = |text: &str, worker: &str| {
        text.lines()
            .any(|line| line.starts_with("dynamo_engine_running_requests") && line.contains(worker))
    };
    frontend
        .wait_for_metrics("no load read", Duration::from_secs(20), |text| {
            read(text, "worker=\"1/") && read(text, "worker=\"2/")
        })
        .await;
    for n in 0..8 {
        let body = json!({"model": "smollm2", "prompt": format!("{n} hello"), "max_tokens": 4});
        let (status, answer) = frontend.complete_with(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let completions = |server: &Replay| server.requests_to("POST /v1/completions");
    assert_eq!(
        completions(&idle),
        8,
        "every request goes to the idle server"
    );
    assert_eq!(completions(&busy), 0);
}

/// A frontend whose only engines are vLLM servers offers vLLM's `prompt_logprobs`, read from
/// the server's whole answer: here a server replaying a fixture for the prompt `[1, 9690,
/// 198]`, sent as token ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_over_vllm_servers_passes_the_prompts_log_probabilities_on() {
    let server = replay_at("vllm", "/v1/completions", "whole_prompt_logprobs.http").await;
    let engine = format!("vllm={}", server.url());
    let (_process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    let request = json!({"model": "smollm2", "prompt": [1, 9690, 198], "max_tokens": 1,
        "prompt_logprobs": 1});
    let (status, answer) = frontend.complete_with(&request).await;
    assert_eq!(status, 200, "{answer}");
    let entries = &answer["choices"][0]["prompt_logprobs"];
    assert!(entries[0].is_null(), "{answer}");
    assert_eq!(entries[1]["9690"]["rank"], 4, "{answer}");
    assert_eq!(entries[1]["9690"]["logprob"], -3.5);
    assert_eq!(entries[1]["28"]["rank"], 1);
    assert_eq!(entries[2].as_object().map(|entry| entry.len()), Some(1));
    assert_eq!(entries[2]["198"]["logprob"], -0.0625);
    let sent = posted(&server);
    assert_eq!(
        (sent["prompt_logprobs"].clone(), sent["stream"].clone()),
        (json!(1), json!(false))
    );
}

/// The body of the last completion posted to `server` (its load poller also reads
/// `/metrics`).
fn posted(server: &Replay) -> Value {
    posted_to(server, "/v1/completions")
}

/// The body of the last request posted to `server` on `path`.
fn posted_to(server: &Replay, path: &str) -> Value {
    let requests = server.seen.requests.lock().expect("not poisoned");
    let (_, body) = requests
        .iter()
        .rev()
        .find(|(line, _)| line.starts_with(&format!("POST {path} ")))
        .expect("a request was posted");
    serde_json::from_slice(body).expect("a JSON body")
}

/// A server replaying one of `engines/upstream`'s fixtures on `/v1/completions`.
async fn replay_of(fixture: &str) -> Replay {
    replay_at("upstream", "/v1/completions", fixture).await
}

/// A server replaying `engines/<adapter>/tests/fixtures/<fixture>` on `path`.
async fn replay_at(adapter: &str, path: &str, fixture: &str) -> Replay {
    let file = replay::package_dir()
        .join("../engines")
        .join(adapter)
        .join("tests/fixtures")
        .join(fixture);
    let bytes = std::fs::read(&file).expect("the fixture");
    Replay::start(HashMap::from([(path.to_owned(), bytes)])).await
}

/// A frontend whose only engines are SGLang servers offers the prompt's log-probabilities too,
/// from SGLang's whole answer (`input_token_logprobs`, fixture written from its source): `echo`
/// with `logprobs`, as lm-evaluation-harness asks, and vLLM's `prompt_logprobs`, whose rank
/// SGLang does not give for a token outside its alternatives (`null`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_over_sglang_servers_passes_the_prompts_log_probabilities_on() {
    let server = replay_at("sglang", "/generate", "generate_whole_prompt_logprobs.http").await;
    let engine = format!("sglang={}", server.url());
    let (_process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    let request = json!({"model": "smollm2", "prompt": [1, 9690, 198, 2683, 359, 253],
        "max_tokens": 3, "echo": true, "logprobs": 1, "prompt_logprobs": 2});
    let (status, answer) = frontend.complete_with(&request).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    // The six prompt tokens, the first unscored, then the three generated.
    let scores = &choice["logprobs"]["token_logprobs"];
    assert_eq!(scores.as_array().map(Vec::len), Some(9), "{answer}");
    assert!(scores[0].is_null(), "{answer}");
    assert_eq!([&scores[1], &scores[6]], [&json!(-9.5), &json!(-0.125)]);
    let entries = &choice["prompt_logprobs"];
    assert!(entries[0].is_null(), "{answer}");
    assert!(entries[1]["9690"]["rank"].is_null(), "{answer}");
    assert_eq!(entries[2]["198"]["rank"], 1, "{answer}");
    let sent = posted_to(&server, "/generate");
    assert_eq!(
        [
            &sent["logprob_start_len"],
            &sent["top_logprobs_num"],
            &sent["stream"]
        ],
        [&json!(0), &json!(2), &json!(false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_fronts_an_sglang_server_with_token_ids() {
    let sglang = replay_at("sglang", "/generate", "stream_cumulative.http").await;
    let engine = format!("sglang={}", sglang.url());
    let (_process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    // The client streams, so does the frontend's call to the server.
    let body = json!({
        "model": "smollm2", "prompt": "Hi", "max_tokens": 3, "stream": true,
        "stream_options": {"include_usage": true}
    });
    let response = frontend.post("/v1/completions", &body).await;
    assert_eq!(response.status().as_u16(), 200);
    let events = support::read_stream(response.into_body(), Duration::from_secs(30)).await;
    let (text, usage, errors, done) = support::streamed_completion(&events);
    assert!(done && errors == 0, "{events}");
    let (_, expected) = frontend_detokenize(&frontend, &[378, 3575, 282]).await;
    assert_eq!(text, expected["prompt"].as_str().unwrap_or_default());
    assert!(events.contains(r#""finish_reason":"length""#), "{events}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 4);
    let requests = sglang.seen.requests.lock().expect("not poisoned");
    let (_, body) = requests
        .iter()
        .find(|(line, _)| line.starts_with("POST /generate"))
        .expect("a generation was posted");
    let sent: Value = serde_json::from_slice(body).expect("JSON");
    assert_eq!(sent["sampling_params"]["max_new_tokens"], 3);
    assert_eq!(sent["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_reach_a_vllm_server_and_an_openai_one_refuses_them() {
    let schema = json!({
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
    });
    let chat = json!({
        "model": "smollm2", "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    });
    // vLLM enforces it: the schema goes in its `response_format`.
    let vllm = replay_of("vllm_whole_token_ids.http").await;
    let engine = format!("vllm={}", vllm.url());
    let (process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    process
        .wait_for("routing to an engine server", Duration::from_secs(10))
        .await;
    let (status, answer) = frontend.post_json("/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{answer}");
    let sent = posted(&vllm);
    assert_eq!(sent["response_format"]["type"], "json_schema", "{sent}");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
    // vLLM's other formats go in its `structured_outputs`, as its own clients send them.
    let mut choice = chat.clone();
    choice["response_format"] = Value::Null;
    choice["structured_outputs"] = json!({"choice": ["Paris", "Lyon"]});
    let (status, answer) = frontend.post_json("/v1/chat/completions", &choice).await;
    assert_eq!(status, 200, "{answer}");
    let sent = posted(&vllm);
    assert_eq!(
        sent["structured_outputs"],
        json!({"choice": ["Paris", "Lyon"]}),
        "{sent}"
    );
    assert!(sent.get("response_format").is_none(), "{sent}");

    // A plain OpenAI-compatible server may ignore it: refused, nothing sent.
    let plain = replay_of("vllm_whole_token_ids.http").await;
    let engine = format!("openai={}", plain.url());
    let (process, frontend) = support::engine_frontend_routed(&[engine], "round-robin").await;
    process
        .wait_for("routing to an engine server", Duration::from_secs(10))
        .await;
    let (status, answer) = frontend.post_json("/v1/chat/completions", &chat).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("response_format"), "{answer}");
    let requests = plain.seen.requests.lock().expect("not poisoned");
    assert!(
        !requests
            .iter()
            .any(|(line, _)| line.starts_with("POST /v1/completions")),
        "nothing is sent"
    );
}

async fn frontend_detokenize(frontend: &Frontend, tokens: &[u32]) -> (u16, Value) {
    let response = frontend
        .post(
            "/detokenize",
            &json!({"model": "smollm2", "tokens": tokens}),
        )
        .await;
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("a body")
        .to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// `--retries 1`: a request that one vLLM server refuses with a 503 (`overloaded`, before any
/// token) is sent again after a pause, and round robin gives it to the other server; every
/// client request is answered, and the retries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_one_server_refuses_is_retried_and_answered_by_the_other() {
    let refusing = replay_of("overloaded_503.http").await;
    let answering = replay_of("vllm_whole_token_ids.http").await;
    let port = free_port().expect("a free port").to_string();
    let (first, second) = (
        format!("vllm={},id=1", refusing.url()),
        format!("vllm={},id=2", answering.url()),
    );
    let args = [
        "frontend",
        "--port",
        &port,
        "--router",
        "round-robin",
        "--retries",
        "1",
        "--engine-at",
        &first,
        "--engine-at",
        &second,
    ];
    let _process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    for n in 0..4 {
        let (status, body) = frontend.complete(&format!("request {n}"), 4).await;
        assert_eq!(status, 200, "{body}");
    }
    let refused = refusing.requests_to("POST /v1/completions");
    assert!(refused >= 1, "round robin never chose the refusing server");
    let metrics = frontend.metrics().await;
    let retried = metrics
        .lines()
        .find_map(|line| line.strip_prefix("dynamo_retries_total{outcome=\"retried\"} "))
        .and_then(|value| value.parse::<f64>().ok());
    assert_eq!(retried, Some(refused as f64), "{metrics}");
}
