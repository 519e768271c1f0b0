//! `dynamo-serve frontend --engine-at openai=…` in front of an engine nobody here wrote:
//! llama.cpp's HTTP server from the PyPI package `xllamacpp`, serving the SmolLM2 GGUF file
//! the frontend tokenizes with (start-up shared with `dynamo-upstream`'s `tests/llama_cpp.rs`):
//! whole and streamed chat, a response format, and the server's load read from its metrics.
//!
//! Runs when `DYNAMO_LLAMA_PYTHON` names a Python with `xllamacpp` installed (CI's virtual
//! environment); without it the test says so and passes without running. Run with
//! `DYNAMO_LLAMA_PYTHON=… cargo test -p dynamo-serve --test llama_cpp_frontend`.

#[expect(dead_code, reason = "this test uses part of the shared support")]
mod support;

#[path = "../../engines/upstream/tests/support/llama_server.rs"]
mod llama_server;

use std::time::Duration;

use dynamo_transport::local::free_port;
use serde_json::{Value, json};
use support::{Frontend, Process, read_stream};

const QUESTION: &str = "What is the capital of France?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_fronts_llama_cpp_for_whole_and_streamed_chat() {
    let Some(server) = start_llama_server().await else {
        return;
    };

    // The gateway's tokenizer and chat template, llama.cpp's compute; its text is tokenized
    // again by the gateway (`openai` servers return no ids).
    let port = free_port().expect("a free port").to_string();
    let engine = format!("openai={}", server.url);
    let args = [
        "frontend",
        "--port",
        &port,
        "--router",
        "approx-kv",
        "--engine-at",
        &engine,
    ];
    let _process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    let question = json!({"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}]});
    // The question's chat prompt, by the frontend's template and tokenizer.
    let prompt_tokens = frontend.tokenize(&question).await.len() as u64;

    // The reference: llama.cpp's own chat endpoint, its template and tokenizer (the same as
    // the gateway's for this model: the same prompt ids).
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "temperature": 0
    });
    let (status, own) = Frontend::new(server.port)
        .post_json("/v1/chat/completions", &body)
        .await;
    assert_eq!(status, 200, "{own}");
    let own_content = own["choices"][0]["message"]["content"].as_str();
    assert!(own_content.is_some_and(|c| !c.is_empty()), "{own}");
    assert_eq!(own["usage"]["prompt_tokens"], prompt_tokens, "{own}");

    // Not streamed, through the frontend: one whole answer, llama.cpp's.
    let (status, answer) = frontend.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant", "{answer}");
    let content = choice["message"]["content"].as_str().unwrap_or_default();
    assert_eq!(Some(content), own_content, "{answer}\n{own}");
    let finish = choice["finish_reason"].as_str().unwrap_or_default();
    assert_eq!(
        own["choices"][0]["finish_reason"], finish,
        "{answer}\n{own}"
    );
    let usage = &answer["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens, "{answer}");
    let completion = usage["completion_tokens"].as_u64().unwrap_or_default();
    assert_eq!(
        own["usage"]["completion_tokens"], completion,
        "{answer}\n{own}"
    );
    assert!((1..=12).contains(&completion), "{answer}");
    assert_eq!(
        usage["total_tokens"],
        prompt_tokens + completion,
        "{answer}"
    );

    // Streamed, with the usage in the last event: the same greedy answer, piece by piece, and
    // the repeated prompt found in llama.cpp's cache.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = frontend.post("/v1/chat/completions", &streamed).await;
    assert_eq!(response.status().as_u16(), 200);
    let events = read_stream(response.into_body(), Duration::from_secs(120)).await;
    let chat = streamed_chat(&events);
    assert!(chat.done, "the stream ends with [DONE]:\n{events}");
    assert!(chat.pieces > 0, "the answer comes in deltas:\n{events}");
    assert_eq!(chat.content, content, "{events}");
    assert_eq!(chat.finish.as_deref(), Some(finish), "{events}");
    assert_eq!(chat.usage["prompt_tokens"], prompt_tokens, "{events}");
    assert_eq!(chat.usage["completion_tokens"], completion, "{events}");
    assert_eq!(chat.usage["total_tokens"], prompt_tokens + completion);
    let cached = chat.usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_default();
    assert!(cached > 0, "the repeated prompt is cached:\n{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_cpp_enforces_a_response_format_named_by_format_json_schema() {
    let Some(server) = start_llama_server().await else {
        return;
    };
    // Two frontends in front of the same server: one told the field llama.cpp's
    // `/v1/completions` enforces a format from, one told nothing.
    let start = |setting: &str| {
        let port = free_port().expect("a free port");
        let engine = format!("openai={}{setting}", server.url);
        let port_text = port.to_string();
        let args = [
            "frontend",
            "--port",
            &port_text,
            "--router",
            "approx-kv",
            "--engine-at",
            &engine,
        ];
        (Process::start(&args), Frontend::new(port))
    };
    let (_told, told) = start(",format=json_schema");
    told.wait_ready().await;

    let schema = json!({
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"]
    });
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 48,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    });
    let (status, answer) = told.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let parsed: Value = serde_json::from_str(content)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {content:?}\n{answer}"));
    assert!(parsed["capital"].is_string(), "{answer}");

    // Without format=, the same request is refused: a 400 naming the field, never an
    // unconstrained answer. This frontend starts only now: started beside the first, it
    // sends its idle server a canary every 5 s, and a canary queued behind the constrained
    // answer above past its 5 s deadline ejects the server from this frontend's routing (the
    // test failed once so under load, the request not reaching the adapter's check).
    let (_untold, untold) = start("");
    untold.wait_ready().await;
    let (status, refused) = untold.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 400, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("response_format"), "{refused}");
}

/// The frontend reads the server's load under llama.cpp's names (`llamacpp:requests_processing`,
/// `llamacpp:requests_deferred`), which is what lets the router excuse a canary queued behind
/// another client's answer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_cpp_servers_load_is_read_from_its_metrics() {
    let Some(server) = start_llama_server().await else {
        return;
    };
    let engines = [format!("openai={},id=1", server.url)];
    let (_process, frontend) = support::engine_frontend_routed(&engines, "approx-kv").await;

    // Idle, the server processes and defers nothing; its scrape is fresh.
    support::eventually(
        "the llama.cpp server's load read",
        Duration::from_secs(30),
        async || {
            let text = frontend.metrics().await;
            support::series_value(&text, "dynamo_engine_metrics_up", "1/0") == Some(1.0)
                && support::series_value(&text, "dynamo_engine_running_requests", "1/0")
                    == Some(0.0)
                && support::series_value(&text, "dynamo_engine_waiting_requests", "1/0")
                    == Some(0.0)
        },
    )
    .await;
}

/// llama.cpp's server, started where `DYNAMO_LLAMA_PYTHON` names a Python with `xllamacpp`;
/// elsewhere `None`, and the test says it is skipped.
async fn start_llama_server() -> Option<llama_server::LlamaServer> {
    let Some(python) = llama_server::python_from_env() else {
        eprintln!(
            "skipped: set {} to a Python with `{}` installed to run this test",
            llama_server::PYTHON_VARIABLE,
            llama_server::XLLAMACPP
        );
        return None;
    };
    let server = tokio::task::spawn_blocking(move || llama_server::start(&python))
        .await
        .expect("started");
    Some(server)
}

/// What a streamed chat completion's server-sent events say.
struct StreamedChat {
    /// The deltas' content, joined.
    content: String,
    /// Events with content.
    pieces: usize,
    finish: Option<String>,
    /// The last event's usage.
    usage: Value,
    /// Whether the events end with `[DONE]`.
    done: bool,
}

fn streamed_chat(events: &str) -> StreamedChat {
    let mut chat = StreamedChat {
        content: String::new(),
        pieces: 0,
        finish: None,
        usage: Value::Null,
        done: false,
    };
    for data in events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
    {
        assert!(!chat.done, "nothing after [DONE]:\n{events}");
        if data == "[DONE]" {
            chat.done = true;
            continue;
        }
        let event: Value = serde_json::from_str(data).expect("a JSON event");
        assert_eq!(event["object"], "chat.completion.chunk", "{data}");
        if let Some(choice) = event["choices"].as_array().and_then(|c| c.first()) {
            if let Some(piece) = choice["delta"]["content"].as_str() {
                chat.content.push_str(piece);
                chat.pieces += usize::from(!piece.is_empty());
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                chat.finish = Some(reason.to_owned());
            }
        }
        if !event["usage"].is_null() {
            chat.usage = event["usage"].clone();
        }
    }
    chat
}
