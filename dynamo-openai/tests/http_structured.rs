//! Structured outputs at the HTTP edge: what `response_format`, vLLM's `structured_outputs`,
//! the Responses API's `text.format` and a forced `tool_choice` send to the engine, on chat and
//! text completions and responses, and the 400s (naming the field) for what the gateway or the
//! grammar engine cannot do.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::StatusCode;
use dynamo_core::{BoxEngine, EchoEngine, Error, GenerateRequest, OutputFormat, TokenStream};
use dynamo_openai::GatewayConfig;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tower::Service;

/// An engine that records the requests it gets and answers as the echo engine (refusing a
/// format, so the gateway's requests are seen before the refusal).
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<GenerateRequest>>>);

impl Service<GenerateRequest> for Recording {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        self.0.lock().unwrap().push(request.clone());
        let mut echo = EchoEngine::new();
        Box::pin(async move { echo.call(request).await })
    }
}

async fn post(engine: BoxEngine, body: Value) -> (StatusCode, Value) {
    let path = if body.get("prompt").is_some() {
        "/v1/completions"
    } else if body.get("input").is_some() {
        "/v1/responses"
    } else {
        "/v1/chat/completions"
    };
    let app = common::app(engine, GatewayConfig::default());
    let (status, bytes) = common::post_json(app, path, &body).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn chat() -> Value {
    json!({"model": "test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
}

fn completion() -> Value {
    json!({"model": "test", "prompt": "Hi", "max_tokens": 4})
}

const SCHEMA: &str =
    r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "weather",
        "parameters": serde_json::from_str::<Value>(SCHEMA).unwrap()}}])
}

/// Each body is a 400 whose `param` names its field.
async fn assert_refused(cases: impl IntoIterator<Item = (Value, &str)>) {
    for (body, field) in cases {
        let (status, answer) = post(BoxEngine::new(EchoEngine::new()), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], json!(field), "{body}: {answer}");
    }
}

/// The format the engine was asked for, and the status of the answer.
async fn sent_format(body: Value) -> (Option<OutputFormat>, StatusCode, Value) {
    let recording = Recording::default();
    let (status, answer) = post(BoxEngine::new(recording.clone()), body).await;
    let format = recording
        .0
        .lock()
        .unwrap()
        .last()
        .and_then(|r| r.format.clone());
    (format, status, answer)
}

#[tokio::test]
async fn formats_reach_the_engine_and_an_engine_that_cannot_enforce_them_says_so() {
    let mut body = chat();
    body["response_format"] = json!({"type": "json_schema",
        "json_schema": {"name": "city", "strict": true, "schema": serde_json::from_str::<Value>(SCHEMA).unwrap()}});
    let (format, status, answer) = sent_format(body).await;
    let Some(OutputFormat::JsonSchema { schema }) = format else {
        panic!("{format:?}")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&schema).unwrap(),
        serde_json::from_str::<Value>(SCHEMA).unwrap()
    );
    // The echo engine cannot enforce it: a 400, never an answer that ignores the format.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format"),
        "{answer}"
    );

    let mut body = chat();
    body["response_format"] = json!({"type": "json_object"});
    assert_eq!(sent_format(body).await.0, Some(OutputFormat::JsonObject));
    let mut body = chat();
    body["response_format"] = json!({"type": "text"});
    let (format, status, _) = sent_format(body).await;
    assert_eq!((format, status), (None, StatusCode::OK));

    let mut body = chat();
    body["tools"] = tools();
    body["tool_choice"] = json!({"type": "function", "function": {"name": "weather"}});
    let (format, _, _) = sent_format(body).await;
    assert!(
        matches!(format, Some(OutputFormat::JsonSchema { .. })),
        "{format:?}"
    );
}

#[tokio::test]
async fn what_cannot_be_done_is_a_400_naming_the_field() {
    let with = |field: &str, value: Value| {
        let mut body = chat();
        body[field] = value;
        body
    };
    let json_schema = |spec: Value| {
        with(
            "response_format",
            json!({"type": "json_schema", "json_schema": spec}),
        )
    };
    let mut forced_and_format = with(
        "tool_choice",
        json!({"type": "function", "function": {"name": "weather"}}),
    );
    forced_and_format["tools"] = tools();
    forced_and_format["response_format"] = json!({"type": "json_object"});
    let mut bad_parameters = with(
        "tool_choice",
        json!({"type": "function", "function": {"name": "weather"}}),
    );
    bad_parameters["tools"] = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "no-such-type"}}}]);
    let cases = [
        (
            with("response_format", json!({"type": "regex"})),
            "response_format.type",
        ),
        (
            with("response_format", json!({"type": "grammar"})),
            "response_format.type",
        ),
        (
            with("response_format", json!({"type": "json_schema"})),
            "response_format.json_schema",
        ),
        (
            json_schema(json!({"name": "has space", "schema": {}})),
            "response_format.json_schema.name",
        ),
        (
            json_schema(json!({"name": "x", "schema": {"type": "no-such-type"}})),
            "response_format.json_schema.schema",
        ),
        (
            json_schema(json!({"name": "x", "schema": {"$ref": "https://example.com/s.json"}})),
            "response_format.json_schema.schema",
        ),
        (
            json_schema(json!({"name": "x", "schema": 7})),
            "response_format.json_schema.schema",
        ),
        (with("tool_choice", json!("required")), "tool_choice"),
        (
            with(
                "tool_choice",
                json!({"type": "function", "function": {"name": "nope"}}),
            ),
            "tool_choice.function.name",
        ),
        (forced_and_format, "response_format"),
        (bad_parameters, "tools[0].function.parameters"),
    ];
    assert_refused(cases).await;
}

#[tokio::test]
async fn structured_outputs_reach_the_engine_from_chat_and_text_completions() {
    let lark = "start: \"a\"+";
    let cases = [
        (
            json!({"regex": "[0-9]{3}"}),
            OutputFormat::Regex {
                pattern: "[0-9]{3}".into(),
            },
        ),
        (
            json!({"choice": ["yes", "no"]}),
            OutputFormat::Choice {
                choices: vec!["yes".into(), "no".into()],
            },
        ),
        (
            json!({"grammar": lark}),
            OutputFormat::Grammar { lark: lark.into() },
        ),
        (json!({"json_object": true}), OutputFormat::JsonObject),
        // A schema as an object or as its text, as vLLM takes it.
        (
            json!({"json": serde_json::from_str::<Value>(SCHEMA).unwrap()}),
            OutputFormat::JsonSchema {
                schema: serde_json::from_str::<Value>(SCHEMA).unwrap().to_string(),
            },
        ),
        (
            json!({"json": SCHEMA, "regex": null}),
            OutputFormat::JsonSchema {
                schema: serde_json::from_str::<Value>(SCHEMA).unwrap().to_string(),
            },
        ),
    ];
    for (structured, expected) in cases {
        for mut body in [chat(), completion()] {
            body["structured_outputs"] = structured.clone();
            let (format, status, answer) = sent_format(body.clone()).await;
            assert_eq!(format.as_ref(), Some(&expected), "{body}");
            // The echo engine cannot enforce it: a 400, never an answer that ignores it.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        }
    }
    let mut body = completion();
    body["response_format"] = json!({"type": "json_object"});
    assert_eq!(sent_format(body).await.0, Some(OutputFormat::JsonObject));
}

#[tokio::test]
async fn a_structured_output_that_cannot_be_done_is_a_400_naming_the_field() {
    let with = |base: Value, structured: Value| {
        let mut body = base;
        body["structured_outputs"] = structured;
        body
    };
    let mut with_format = with(chat(), json!({"regex": "a"}));
    with_format["response_format"] = json!({"type": "json_object"});
    let mut with_forced = with(chat(), json!({"regex": "a"}));
    with_forced["tools"] = tools();
    with_forced["tool_choice"] = json!({"type": "function", "function": {"name": "weather"}});
    let mut completion_format = completion();
    completion_format["response_format"] = json!({"type": "regex"});
    let cases = [
        (with(chat(), json!({})), "structured_outputs"),
        (
            with(completion(), json!({"regex": "a", "choice": ["a"]})),
            "structured_outputs",
        ),
        (
            with(chat(), json!({"structural_tag": "{}"})),
            "structured_outputs.structural_tag",
        ),
        (
            with(completion(), json!({"regex": "[0-9"})),
            "structured_outputs.regex",
        ),
        (
            with(chat(), json!({"grammar": "start: missing_rule"})),
            "structured_outputs.grammar",
        ),
        (
            with(chat(), json!({"choice": []})),
            "structured_outputs.choice",
        ),
        (
            with(completion(), json!({"json": "{not json"})),
            "structured_outputs.json",
        ),
        (
            with(chat(), json!({"json": {"type": "no-such-type"}})),
            "structured_outputs.json",
        ),
        (with_format, "structured_outputs"),
        (with_forced, "structured_outputs"),
        (completion_format, "response_format.type"),
    ];
    assert_refused(cases).await;
}

#[tokio::test]
async fn required_tool_calls_are_an_array_of_calls_of_the_tools() {
    let mut body = chat();
    body["tools"] = json!([
        {"type": "function", "function": {"name": "weather",
            "parameters": serde_json::from_str::<Value>(SCHEMA).unwrap()}},
        {"type": "function", "function": {"name": "time"}},
    ]);
    body["tool_choice"] = json!("required");
    let schema = |format: Option<OutputFormat>| match format {
        Some(OutputFormat::JsonSchema { schema }) => {
            serde_json::from_str::<Value>(&schema).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let sent = schema(sent_format(body.clone()).await.0);
    let call = |name: &str, arguments: Value| {
        json!({"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"], "additionalProperties": false})
    };
    assert_eq!(
        sent,
        json!({"type": "array", "minItems": 1, "items": {"anyOf": [
            call("weather", serde_json::from_str(SCHEMA).unwrap()),
            call("time", json!({"type": "object"})),
        ]}})
    );
    // One call at most when the client says so.
    body["parallel_tool_calls"] = json!(false);
    assert_eq!(schema(sent_format(body.clone()).await.0)["maxItems"], 1);

    // A tool whose parameters do not compile is named; so is a format beside the calls.
    let mut bad = body.clone();
    bad["tools"][1]["function"]["parameters"] = json!({"type": "no-such-type"});
    let mut with_format = body;
    with_format["response_format"] = json!({"type": "json_object"});
    assert_refused([
        (bad, "tools[1].function.parameters"),
        (with_format, "response_format"),
    ])
    .await;
}

#[tokio::test]
async fn the_responses_text_format_reaches_the_engine_and_its_faults_are_named() {
    let response =
        |format: Value| json!({"model": "test", "input": "Hi", "text": {"format": format}});
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let (format, _, _) = sent_format(response(
        json!({"type": "json_schema", "name": "city", "schema": schema, "strict": true}),
    ))
    .await;
    assert_eq!(
        format,
        Some(OutputFormat::JsonSchema {
            schema: schema.to_string()
        })
    );
    let (format, _, _) = sent_format(response(json!({"type": "json_object"}))).await;
    assert_eq!(format, Some(OutputFormat::JsonObject));
    let (format, status, _) = sent_format(response(json!({"type": "text"}))).await;
    assert_eq!((format, status), (None, StatusCode::OK));

    let mut verbose = response(json!({"type": "text"}));
    verbose["text"]["verbosity"] = json!("low");
    assert_refused([
        (response(json!({"type": "regex"})), "text.format.type"),
        (
            response(json!({"type": "json_schema", "schema": schema})),
            "text.format.name",
        ),
        (
            response(json!({"type": "json_schema", "name": "x"})),
            "text.format.schema",
        ),
        (
            response(
                json!({"type": "json_schema", "name": "x", "schema": {"type": "no-such-type"}}),
            ),
            "text.format.schema",
        ),
        (verbose, "text.verbosity"),
    ])
    .await;
}
