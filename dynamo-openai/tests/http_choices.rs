//! Several choices per request (`n`, `best_of`): one engine call to an engine that forks, one
//! call per choice to any other; per-choice finish reasons, usage counting each prompt once,
//! snapshots (insta) of the whole answers and of the chunks.
//!
//! After an intended change: `INSTA_UPDATE=always cargo test -p dynamo-openai --test http_choices`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{CHATML, RecordingEngine};
use dynamo_core::{
    BoxEngine, FinishReason, GenerateRequest, TokenChunk, TokenLogProb, TokenStream, Usage,
};
use dynamo_openai::{ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, Tokenizer};
use serde_json::{Value, json};

/// insta's `assert_json_snapshot!` with map keys sorted (see `json_shapes.rs`).
macro_rules! assert_json_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!($($arg)*) })
    };
}

/// What choice `i` of the forking engine answers.
const ANSWERS: [&str; 4] = ["Paris.", "Lyon!", "Nice", "Metz?"];

/// An engine that forks as the candle engine does: every choice on one stream, chunks
/// interleaved and tagged, a finish per choice. Each token of choice `i` has log-probability
/// `-(n - i) / 4`, so the last choice is the most likely. It records the `n` it was asked for.
fn forking(seen: Arc<parking_lot::Mutex<Vec<u32>>>) -> BoxEngine {
    let engine = tower::service_fn(move |request: GenerateRequest| {
        let seen = seen.clone();
        async move {
            seen.lock().push(request.n);
            let n = request.n;
            let mut chunks = Vec::new();
            let longest = ANSWERS.iter().map(|a| a.len()).max().unwrap_or(0);
            for position in 0..longest {
                for index in 0..n {
                    let answer = ANSWERS[index as usize % ANSWERS.len()].as_bytes();
                    let Some(&byte) = answer.get(position) else {
                        continue;
                    };
                    let mut chunk = TokenChunk::token(byte.into());
                    chunk.index = index;
                    chunk.log_probs = request.sampling.logprobs.map(|_| {
                        vec![TokenLogProb {
                            token: byte.into(),
                            logprob: -((n - index) as f32) / 4.0,
                            top: Vec::new(),
                            rank: None,
                        }]
                    });
                    chunks.push(Ok(chunk));
                }
            }
            for index in 0..n {
                let usage = Usage {
                    prompt_tokens: request.tokens.len() as u32,
                    cached_tokens: 0,
                    completion_tokens: ANSWERS[index as usize % ANSWERS.len()].len() as u32,
                };
                let chunk = TokenChunk {
                    index,
                    more_choices: index + 1 < n,
                    ..TokenChunk::finish(FinishReason::Eos, Some(usage))
                };
                chunks.push(Ok(chunk));
            }
            Ok::<_, dynamo_core::Error>(TokenStream::from_chunks(chunks))
        }
    });
    BoxEngine::new(engine)
}

fn app(engine: BoxEngine, forks: bool, config: GatewayConfig) -> axum::Router {
    let registry = ModelRegistry::default();
    let template = ChatTemplate::new(CHATML).unwrap();
    let entry = ModelEntry::new("test", engine, Tokenizer::bytes())
        .with_chat_template(template)
        .with_forking(forks);
    registry.insert(entry);
    Gateway::new(registry, config).into_router()
}

fn forking_app() -> (axum::Router, Arc<parking_lot::Mutex<Vec<u32>>>) {
    let seen = Arc::default();
    let app = app(forking(Arc::clone(&seen)), true, GatewayConfig::default());
    (app, seen)
}

async fn post(app: axum::Router, path: &str, body: Value) -> (StatusCode, String) {
    let (status, bytes) = common::post_json(app, path, &body).await;
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn answer(app: axum::Router, path: &str, body: Value) -> Value {
    let (status, text) = post(app, path, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn stream(app: axum::Router, path: &str, body: Value) -> Vec<Value> {
    let (status, text) = post(app, path, body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|_| Value::from(data)))
        .collect()
}

fn chat(n: u32) -> Value {
    json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}], "n": n,
        "max_tokens": 8})
}

#[tokio::test]
async fn chat_with_three_choices_from_one_forked_request() {
    let (app, seen) = forking_app();
    let body = answer(app, "/v1/chat/completions", chat(3)).await;
    assert_eq!(*seen.lock(), [3], "one engine request for three choices");
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

/// An engine that forks into two choices and goes on with the first only once the gateway has
/// stopped the second: "Ly" for choice 1, then, when choice 1's own token is cancelled, its
/// finish and the whole of choice 0.
fn waiting_for_a_stopped_choice() -> BoxEngine {
    BoxEngine::new(tower::service_fn(|request: GenerateRequest| async move {
        let Some(stopped) = request.choice_cancellation(1).cloned() else {
            return Err(dynamo_core::Error::invalid_request("no choice tokens"));
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let tokens = |index: u32, text: &'static [u8]| {
                text.iter().map(move |&byte| TokenChunk {
                    index,
                    ..TokenChunk::token(byte.into())
                })
            };
            let finish = |index: u32, reason, more_choices| TokenChunk {
                index,
                more_choices,
                ..TokenChunk::finish(reason, None)
            };
            for chunk in tokens(1, b"Ly") {
                let _ = sender.send(Ok(chunk)).await;
            }
            stopped.cancelled().await;
            let rest = std::iter::once(finish(1, FinishReason::Cancelled, true))
                .chain(tokens(0, b"Paris."))
                .chain([finish(0, FinishReason::Eos, false)]);
            for chunk in rest {
                let _ = sender.send(Ok(chunk)).await;
            }
        });
        Ok(TokenStream::from_receiver(
            receiver,
            request.cancellation().clone(),
        ))
    }))
}

#[tokio::test]
async fn a_stop_string_that_ends_a_forked_choice_stops_it_on_the_engine() {
    let app = app(
        waiting_for_a_stopped_choice(),
        true,
        GatewayConfig::default(),
    );
    let mut body = chat(2);
    body["stop"] = json!(["y"]);
    // Were choice 1 not stopped on the engine, choice 0 would never come.
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        answer(app, "/v1/chat/completions", body),
    )
    .await
    .expect("the gateway stops the choice its stop string ended");
    let choices = &answered["choices"];
    assert_eq!(choices[1]["message"]["content"], "L", "{answered}");
    assert_eq!(choices[1]["finish_reason"], "stop");
    assert_eq!(choices[0]["message"]["content"], "Paris.");
}

#[tokio::test]
async fn chat_stream_with_three_choices() {
    let (app, _) = forking_app();
    let mut request = chat(3);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let chunks = stream(app, "/v1/chat/completions", request).await;
    // Each choice ends once, with its own finish reason; the usage chunk comes last.
    let finishes: Vec<u64> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|choice| choice["finish_reason"].is_string())
        .map(|choice| choice["index"].as_u64().unwrap())
        .collect();
    assert_eq!(finishes.len(), 3, "{chunks:?}");
    let usage = &chunks[chunks.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], 6 + 5 + 4);
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn completion_best_of_keeps_the_most_likely_and_counts_every_candidate() {
    let (app, seen) = forking_app();
    let request = json!({"model": "test", "prompt": "Hi", "n": 2, "best_of": 4,
        "max_tokens": 8});
    let body = answer(app, "/v1/completions", request).await;
    assert_eq!(
        *seen.lock(),
        [4],
        "best_of candidates from one engine request"
    );
    // Candidates 3 and 2 are the most likely; all four were generated.
    assert_eq!(body["choices"][0]["text"], "Metz?");
    assert_eq!(body["choices"][1]["text"], "Nice");
    assert_eq!(body["usage"]["completion_tokens"], 6 + 5 + 4 + 5);
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_json_snapshot!(body, {".id" => "[id]", ".created" => "[created]"});
}

#[tokio::test]
async fn completion_stream_of_two_prompts_with_two_choices_each() {
    let (app, _) = forking_app();
    let request = json!({"model": "test", "prompt": ["Hi", "Yo"], "n": 2, "max_tokens": 8,
        "stream": true, "stream_options": {"include_usage": true}});
    let mut chunks = stream(app, "/v1/completions", request).await;
    let usage = chunks[chunks.len() - 2]["usage"].clone();
    assert_eq!(usage["prompt_tokens"], 4, "each prompt once: {usage}");
    assert_eq!(usage["completion_tokens"], 2 * (6 + 5));
    // The two prompts' streams interleave as they come; sort by choice for a stable snapshot.
    let done = chunks.split_off(chunks.len() - 2);
    chunks.sort_by_key(|c| c["choices"][0]["index"].as_u64());
    chunks.extend(done);
    assert_json_snapshot!(chunks, {"[].id" => "[id]", "[].created" => "[created]"});
}

#[tokio::test]
async fn an_engine_that_does_not_fork_gets_one_request_per_choice() {
    let engine = RecordingEngine::default();
    let app = app(
        BoxEngine::new(engine.clone()),
        false,
        GatewayConfig::default(),
    );
    let single = answer(app.clone(), "/v1/chat/completions", chat(1)).await;
    engine.requests.lock().clear();
    let mut request = chat(3);
    request["seed"] = json!(40);
    let body = answer(app, "/v1/chat/completions", request).await;
    let requests = engine.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.n == 1));
    let mut seeds: Vec<_> = requests.iter().map(|r| r.sampling.seed).collect();
    seeds.sort();
    assert_eq!(seeds, [Some(40), Some(41), Some(42)]);
    let mut ids: Vec<_> = requests.iter().map(|r| r.id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct request ids");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        assert_eq!(
            choice["message"]["content"],
            choices[0]["message"]["content"]
        );
        assert!(choice["finish_reason"].is_string());
    }
    let one = requests[0].tokens.len();
    assert_eq!(
        body["usage"]["prompt_tokens"], one,
        "the prompt counts once"
    );
    let completion = |body: &Value| body["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        completion(&body),
        3 * completion(&single),
        "every choice's tokens"
    );
}

#[tokio::test]
async fn choices_out_of_range_are_refused_by_name() {
    let (app, _) = forking_app();
    let small = self::app(
        forking(Arc::default()),
        true,
        GatewayConfig::default().with_max_choices(2),
    );
    let completion = |extra: Value| {
        let mut body = json!({"model": "test", "prompt": "Hi", "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (app.clone(), "/v1/chat/completions", chat(17), "n"),
        (app.clone(), "/v1/chat/completions", chat(0), "n"),
        (small, "/v1/chat/completions", chat(3), "n"),
        (
            app.clone(),
            "/v1/completions",
            completion(json!({"n": 3, "best_of": 2})),
            "best_of",
        ),
        (
            app.clone(),
            "/v1/completions",
            completion(json!({"best_of": 3, "stream": true})),
            "best_of",
        ),
        (
            app,
            "/v1/completions",
            completion(json!({"best_of": 17})),
            "best_of",
        ),
    ];
    for (app, path, body, param) in cases {
        let (status, text) = post(app, path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["param"], param, "{body}: {text}");
    }
}
