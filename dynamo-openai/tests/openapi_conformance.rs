//! The OpenAPI document against the gateway's real answers: requests go through the router
//! in-process (axum's `oneshot`), and every answer (whole responses, each streamed chunk, error
//! bodies, the models list, the probes) is validated against the schema that the document gives
//! for that route, status and content type. The request bodies are validated against the
//! route's request schema too.
//!
//! The schemas are made strict for these checks: an object may hold only the properties its
//! schema names (`additionalProperties: false`, or `unevaluatedProperties: false` where a
//! flattened struct makes an `allOf`), so a field the gateway writes but the document does not
//! name, or names differently, fails here.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{CHATML, TickingEngine};
use dynamo_core::{BoxEmbedder, BoxEngine, EchoEngine, EmbedRequest, Embeddings};
use dynamo_openai::{
    ChatTemplate, EmbeddingModel, Gateway, GatewayConfig, ModelEntry, ModelRegistry,
    ReasoningFormat, Tokenizer, ToolCallFormat, openapi_document,
};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// The document, with its schemas made strict.
struct Contract {
    document: Value,
    strict_schemas: Value,
}

impl Contract {
    fn new() -> Self {
        let document = openapi_document();
        let mut schemas = document["components"]["schemas"].clone();
        // Components used as a part of an `allOf` (flattened structs, and the variants of an
        // enum tagged by a field), wherever it is, must stay open: the composing schema closes
        // them with `unevaluatedProperties`.
        let mut parts = Vec::new();
        composed_parts(&schemas, &mut parts);
        for (name, schema) in schemas.as_object_mut().unwrap() {
            close(schema, parts.contains(name));
        }
        Contract {
            strict_schemas: schemas,
            document,
        }
    }

    /// The schema of `method path`'s answer with `status` in `media`, following a reference to
    /// a reusable response. Panics if the document does not describe that answer.
    fn response_schema(&self, method: &str, path: &str, status: StatusCode, media: &str) -> Value {
        let operation = &self.document["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        let mut response = &operation["responses"][status.as_str()];
        if let Some(reference) = response["$ref"].as_str() {
            response = self.resolve(reference);
        }
        let schema = &response["content"][media]["schema"];
        assert!(
            schema.is_object(),
            "the document has no {media} answer for {status} to {method} {path}"
        );
        schema.clone()
    }

    /// The schema of `path`'s JSON request body.
    fn request_schema(&self, path: &str) -> Value {
        let schema = &self.document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(schema.is_object(), "POST {path} has no JSON request body");
        schema.clone()
    }

    fn resolve(&self, reference: &str) -> &Value {
        let pointer = reference.strip_prefix('#').unwrap();
        self.document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {reference}"))
    }

    /// Why `instance` does not conform to `schema` (empty if it does). The schema is validated
    /// as the root of a JSON Schema 2020-12 document that holds the strict components, so its
    /// `$ref`s to `#/components/schemas/…` resolve there.
    fn violations(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.as_object().unwrap().clone();
        root.insert(
            "$schema".to_owned(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert(
            "components".to_owned(),
            json!({ "schemas": self.strict_schemas }),
        );
        let validator = jsonschema::draft202012::new(&Value::Object(root))
            .unwrap_or_else(|error| panic!("the schema {schema} does not compile: {error}"));
        validator
            .iter_errors(instance)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect()
    }

    fn assert_conforms(&self, schema: &Value, instance: &Value, what: &str) {
        let violations = self.violations(schema, instance);
        assert!(
            violations.is_empty(),
            "{what} does not conform to {schema}:\n{}\n{instance:#}",
            violations.join("\n")
        );
    }
}

/// The names of the components that `schema`, or any schema under it, composes with `allOf`.
fn composed_parts(schema: &Value, parts: &mut Vec<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::Array(composed)) = object.get("allOf") {
                let references = composed.iter().filter_map(|part| part["$ref"].as_str());
                parts.extend(references.map(|to| to.rsplit('/').next().unwrap().to_owned()));
            }
            object
                .values()
                .for_each(|value| composed_parts(value, parts));
        }
        Value::Array(values) => values.iter().for_each(|value| composed_parts(value, parts)),
        _ => {}
    }
}

/// Close every object schema under `schema`: `additionalProperties: false` on plain objects,
/// `unevaluatedProperties: false` on `allOf` compositions (whose parts stay open). `open` leaves
/// `schema` itself open, for a part of a composition.
fn close(schema: &mut Value, open: bool) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let composed = object.contains_key("allOf");
    if composed {
        object.insert("unevaluatedProperties".to_owned(), json!(false));
    } else if !open && object.contains_key("properties") {
        object.entry("additionalProperties").or_insert(json!(false));
    }
    for (key, value) in object.iter_mut() {
        match (key.as_str(), value) {
            ("allOf", Value::Array(parts)) => parts.iter_mut().for_each(|part| close(part, true)),
            ("properties", Value::Object(properties)) => {
                properties.values_mut().for_each(|p| close(p, false));
            }
            (_, Value::Array(items)) => items.iter_mut().for_each(|item| close(item, false)),
            (_, value @ Value::Object(_)) => close(value, false),
            _ => {}
        }
    }
}

/// A gateway serving `test` over the echo engine.
fn echo() -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default())
}

/// A model `test` that answers with `answer` (byte tokens), parsing tool calls and reasoning.
fn answering(answer: &'static str) -> axum::Router {
    let registry = ModelRegistry::default();
    let engine = BoxEngine::new(TickingEngine::new(answer, Duration::ZERO));
    let entry = ModelEntry::new("test", engine, Tokenizer::bytes())
        .with_chat_template(ChatTemplate::new(CHATML).unwrap())
        .with_tool_calls(ToolCallFormat::Hermes)
        .with_reasoning(ReasoningFormat::Think);
    registry.insert(entry);
    Gateway::new(registry, GatewayConfig::default()).into_router()
}

const TOOL_ANSWER: &str = r#"<think>The user wants weather.</think>Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>"#;

/// An answer: its status, content type and body.
struct Answer {
    status: StatusCode,
    media: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// Every `data:` payload of a server-sent event stream but the final `[DONE]`, as JSON.
    fn events(&self) -> Vec<Value> {
        let data: Vec<&str> = self
            .body
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{}", self.body);
        data[..data.len() - 1]
            .iter()
            .map(|payload| serde_json::from_str(payload).unwrap())
            .collect()
    }
}

async fn send(app: axum::Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    Answer {
        status,
        media,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: axum::Router, path: &str) -> Answer {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(app: axum::Router, path: &str, body: impl Into<Body>) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, request).await
}

/// Send `body` to `path`, after checking that it conforms to the route's request schema, and
/// check the JSON answer against the schema the document gives for its status.
async fn exchange(contract: &Contract, app: axum::Router, path: &str, body: Value) -> Answer {
    let request_schema = contract.request_schema(path);
    contract.assert_conforms(&request_schema, &body, &format!("the request to {path}"));
    let answer = post(app, path, body.to_string()).await;
    let stream = body["stream"] == json!(true) && answer.status == StatusCode::OK;
    let media = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    assert_eq!(answer.media, media, "{}", answer.body);
    let schema = contract.response_schema("post", path, answer.status, media);
    match stream {
        true => {
            let events = answer.events();
            assert!(!events.is_empty());
            for (n, event) in events.iter().enumerate() {
                contract.assert_conforms(&schema, event, &format!("chunk {n} from {path}"));
            }
        }
        false => {
            contract.assert_conforms(&schema, &answer.json(), &format!("the answer of {path}"))
        }
    }
    answer
}

fn chat(content: &str, max_tokens: usize) -> Value {
    json!({"model": "test", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
}

fn chat_with_tools() -> Value {
    let mut request = chat("Weather in Paris?", TOOL_ANSWER.len());
    request["tools"] = json!([{"type": "function", "function": {"name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    request["tool_choice"] = json!("auto");
    request
}

/// A gateway serving the embedding model `vectors`: a word-level tokenizer of three words, and
/// vectors of two numbers (the input's length and its first id).
fn embedding() -> axum::Router {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    let json = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel",
        "vocab": {"[UNK]": 0, "hello": 1, "world": 2}, "unk_token": "[UNK]"}});
    std::fs::write(&tokenizer, json.to_string()).unwrap();
    let vectors = tower::service_fn(|request: EmbedRequest| async move {
        let count = request.token_count() as u32;
        let vectors = request
            .inputs
            .iter()
            .map(|input| vec![input.len() as f32, input[0] as f32])
            .collect();
        Ok::<_, dynamo_core::Error>(Embeddings::new(vectors, count))
    });
    let model =
        EmbeddingModel::from_tokenizer_file("vectors", BoxEmbedder::new(vectors), tokenizer, 2, 8)
            .unwrap();
    let registry = ModelRegistry::default();
    registry.insert_embedding(model);
    Gateway::new(registry, GatewayConfig::default()).into_router()
}

#[tokio::test]
async fn embeddings_conform() {
    let contract = Contract::new();
    for (input, format) in [
        (json!("hello world"), "float"),
        (json!(["hello", "world hello"]), "base64"),
        (json!([1, 2]), "float"),
        (json!([[1], [2, 1]]), "base64"),
    ] {
        let request = json!({"model": "vectors", "input": input, "encoding_format": format,
            "dimensions": 2, "user": "someone"});
        let answer = exchange(&contract, embedding(), "/v1/embeddings", request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let request = json!({"model": "vectors", "input": "hello", "dimensions": 3});
    let answer = exchange(&contract, embedding(), "/v1/embeddings", request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    let request = json!({"model": "nothing", "input": "hello"});
    let answer = exchange(&contract, embedding(), "/v1/embeddings", request).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
}

#[tokio::test]
async fn chat_completions_conform() {
    let contract = Contract::new();
    let answer = exchange(&contract, echo(), "/v1/chat/completions", chat("Hi", 4)).await;
    assert_eq!(answer.status, StatusCode::OK);

    // Every optional field of the request, in the shapes clients send.
    let mut full = chat_with_tools();
    full["messages"] = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}], "name": "ann"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call-1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Lyon\"}"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call-1"},
        {"role": "user", "content": "And Paris?"},
    ]);
    let sampling = json!({"temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "seed": 7, "presence_penalty": 0.1, "frequency_penalty": -0.1, "repetition_penalty": 1.1,
        "stop": ["never"], "stop_token_ids": [0], "min_tokens": 1, "ignore_eos": false, "n": 1,
        "user": "ann", "max_completion_tokens": TOOL_ANSWER.len(), "parallel_tool_calls": true});
    full.as_object_mut()
        .unwrap()
        .extend(sampling.as_object().unwrap().clone());
    let answer = exchange(
        &contract,
        answering(TOOL_ANSWER),
        "/v1/chat/completions",
        full,
    )
    .await;
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    assert!(body["choices"][0]["message"]["reasoning_content"].is_string());
}

#[tokio::test]
async fn chat_stream_chunks_conform() {
    let contract = Contract::new();
    let mut request = chat("Hi", 3);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    exchange(&contract, echo(), "/v1/chat/completions", request).await;

    let mut request = chat_with_tools();
    request["stream"] = json!(true);
    let answer = exchange(
        &contract,
        answering(TOOL_ANSWER),
        "/v1/chat/completions",
        request,
    )
    .await;
    let events = answer.events();
    assert!(
        events
            .iter()
            .any(|event| event["choices"][0]["delta"]["tool_calls"].is_array())
    );
}

#[tokio::test]
async fn completions_conform() {
    let contract = Contract::new();
    for prompt in [
        json!("Hello"),
        json!(["ab", "cd"]),
        json!([72, 105]),
        json!([[72, 105], [79]]),
    ] {
        let request = json!({"model": "test", "prompt": prompt, "max_tokens": 2, "echo": true,
            "stop": "never", "temperature": 0});
        let answer = exchange(&contract, echo(), "/v1/completions", request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let request = json!({"model": "test", "prompt": "Hey", "max_tokens": 2, "stream": true,
        "stream_options": {"include_usage": true}});
    exchange(&contract, echo(), "/v1/completions", request).await;
}

#[tokio::test]
async fn logprobs_conform() {
    let contract = Contract::new();
    for stream in [false, true] {
        let mut request = chat("Hé", 3);
        request["logprobs"] = json!(true);
        request["top_logprobs"] = json!(2);
        request["stream"] = json!(stream);
        let answer = exchange(&contract, echo(), "/v1/chat/completions", request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let request = json!({"model": "test", "prompt": "Hé", "max_tokens": 3, "logprobs": 2,
            "stream": stream});
        let answer = exchange(&contract, echo(), "/v1/completions", request).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}

#[tokio::test]
async fn error_bodies_conform() {
    let contract = Contract::new();
    // Requests that conform to the schema but not to what is served or supported.
    let unknown_model = json!({"model": "nope", "prompt": "Hi"});
    let answer = exchange(&contract, echo(), "/v1/completions", unknown_model).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let mut logprobs = chat("Hi", 4);
    logprobs["top_logprobs"] = json!(3);
    let answer = exchange(&contract, echo(), "/v1/chat/completions", logprobs).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let mut regex = chat("Hi", 4);
    regex["response_format"] = json!({"type": "regex"});
    let answer = exchange(&contract, echo(), "/v1/chat/completions", regex).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    // Bodies the schema refuses, and the gateway with it.
    let schema = contract.response_schema(
        "post",
        "/v1/chat/completions",
        StatusCode::BAD_REQUEST,
        "application/json",
    );
    let request_schema = contract.request_schema("/v1/chat/completions");
    for (field, value) in [
        ("n", json!(0)),
        ("temperature", json!(3.5)),
        ("top_p", json!(0)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
        ("logit_bias", json!({"1": 5})),
    ] {
        let mut request = chat("Hi", 4);
        request[field] = value;
        assert!(
            !contract.violations(&request_schema, &request).is_empty(),
            "the schema accepts {request}"
        );
        let answer = post(echo(), "/v1/chat/completions", request.to_string()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
        assert_eq!(answer.json()["error"]["param"], field);
        contract.assert_conforms(&schema, &answer.json(), &format!("the 400 for {field}"));
    }

    let answer = post(echo(), "/v1/completions", "{not json").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let schema =
        contract.response_schema("post", "/v1/completions", answer.status, "application/json");
    contract.assert_conforms(&schema, &answer.json(), "the 400 for a malformed body");

    let small = common::app(
        BoxEngine::new(EchoEngine::new()),
        GatewayConfig::default().with_body_limit(64),
    );
    let answer = post(
        small,
        "/v1/completions",
        chat(&"x".repeat(100), 1).to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let schema =
        contract.response_schema("post", "/v1/completions", answer.status, "application/json");
    contract.assert_conforms(&schema, &answer.json(), "the 413");
}

#[tokio::test]
async fn models_probes_and_the_document_conform() {
    let contract = Contract::new();
    let empty = || Gateway::new(ModelRegistry::default(), GatewayConfig::default()).into_router();
    let cases = [
        ("/v1/models", echo(), StatusCode::OK),
        ("/health", echo(), StatusCode::OK),
        ("/health", empty(), StatusCode::SERVICE_UNAVAILABLE),
        ("/live", echo(), StatusCode::OK),
        ("/ready", echo(), StatusCode::OK),
        ("/ready", empty(), StatusCode::SERVICE_UNAVAILABLE),
        // This gateway was given no metrics recorder.
        ("/metrics", echo(), StatusCode::NOT_FOUND),
        ("/openapi.json", echo(), StatusCode::OK),
    ];
    for (path, app, status) in cases {
        let answer = get(app, path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.media, "application/json", "{path}");
        let schema = contract.response_schema("get", path, status, "application/json");
        contract.assert_conforms(&schema, &answer.json(), &format!("the {status} of {path}"));
    }
    let models = get(echo(), "/v1/models").await.json();
    assert_eq!(models["data"][0]["id"], "test");
}

#[tokio::test]
async fn a_stored_response_and_its_input_items_conform() {
    let contract = Contract::new();
    let app = answering("18 C in Paris.");
    let ask = json!({"model": "test", "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call-1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call-1", "output": "18 C"},
        {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]},
    ]});
    let answer = exchange(&contract, app.clone(), "/v1/responses", ask).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_owned();
    let items = "/v1/responses/{id}/input_items";
    let cases = [
        (
            format!("/v1/responses/{id}"),
            "/v1/responses/{id}",
            StatusCode::OK,
        ),
        (
            format!("/v1/responses/{id}/input_items"),
            items,
            StatusCode::OK,
        ),
        (
            format!("/v1/responses/{id}/input_items?order=asc&limit=1"),
            items,
            StatusCode::OK,
        ),
        (
            format!("/v1/responses/{id}/input_items?order=up"),
            items,
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/responses/resp_gone/input_items".to_owned(),
            items,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, documented, status) in cases {
        let answer = get(app.clone(), &path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        let schema = contract.response_schema("get", documented, status, "application/json");
        contract.assert_conforms(&schema, &answer.json(), &format!("the {status} of {path}"));
    }
}

/// A change to a JSON object.
type Edit = fn(&mut Map<String, Value>);

/// The strict schemas catch what drift looks like: a field the document does not name, a
/// renamed one, a missing required one, a wrong constant.
#[tokio::test]
async fn drift_would_be_caught() {
    let contract = Contract::new();
    let answer = post(echo(), "/v1/chat/completions", chat("Hi", 2).to_string()).await;
    let good = answer.json();
    let schema = contract.response_schema(
        "post",
        "/v1/chat/completions",
        StatusCode::OK,
        "application/json",
    );
    contract.assert_conforms(&schema, &good, "the answer");
    let edits: [(&str, Edit); 4] = [
        ("an extra field", |body| {
            body.insert("system_fingerprint".to_owned(), json!("x"));
        }),
        ("a renamed field", |body| {
            let usage = body.remove("usage").unwrap();
            body.insert("usages".to_owned(), usage);
        }),
        ("a nested extra field", |body| {
            body["choices"][0]["message"]["refusal"] = json!(null);
        }),
        ("a wrong constant", |body| {
            body.insert("object".to_owned(), json!("chat.completion.chunk"));
        }),
    ];
    for (what, edit) in edits {
        let mut bad = good.clone();
        edit(bad.as_object_mut().unwrap());
        assert!(
            !contract.violations(&schema, &bad).is_empty(),
            "{what} passes: {bad}"
        );
    }
}
