//! `/v1/responses` as an agent framework calls it: text, messages, function calls and their
//! outputs in; an assistant message and the calls the model made out, whole or as the named
//! server-sent events of OpenAI's Responses API; and a 400 naming every field this gateway
//! does not implement.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use dynamo_core::{BoxEngine, EchoEngine, FinishReason, GenerateRequest, OutputFormat};
use dynamo_openai::object_store::ObjectStore;
use dynamo_openai::object_store::local::LocalFileSystem;
use dynamo_openai::{
    ChatTemplate, Gateway, GatewayConfig, ModelEntry, ModelRegistry, ReasoningFormat, Tokenizer,
    ToolCallFormat,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// insta's `assert_json_snapshot!` with map keys sorted (see `http_tokenize.rs`).
macro_rules! assert_json_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!($($arg)*) })
    };
}

/// POST `body` to `/v1/responses` over the echo engine; the status and the body's bytes.
async fn post(body: Value) -> (StatusCode, String) {
    let app = common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default());
    let (status, bytes) = common::post_json(app, "/v1/responses", &body).await;
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The echo engine answers with the rendered prompt itself (one byte a token).
const PROMPT: &str = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";

#[tokio::test]
async fn a_response_holds_one_assistant_message_and_the_usage() {
    let body = json!({"model": "test", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 12,
                      "metadata": {"run": "7"}});
    let (status, text) = post(body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["object"], "response");
    // The echo runs past 12 tokens: the output limit makes it incomplete.
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(response["output"][0]["content"][0]["text"], &PROMPT[..12]);
    assert_eq!(response["usage"]["input_tokens"], PROMPT.len());
    assert_eq!(response["usage"]["output_tokens"], 12);
    assert_eq!(response["metadata"]["run"], "7");
    assert_json_snapshot!(response, {".id" => "[id]", ".created_at" => "[created]", ".output[].id" => "[id]"});

    // Room enough: completed.
    let body = json!({"model": "test", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
                      "instructions": "Be brief."});
    let (status, text) = post(body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let response: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], PROMPT);
}

#[tokio::test]
async fn a_streamed_response_is_the_named_events_in_order() {
    let body = json!({"model": "test", "input": "Hi", "instructions": "Be brief.", "stream": true});
    let (status, text) = post(body).await;
    assert_eq!(status, StatusCode::OK);
    let mut names = Vec::new();
    let mut events = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            names.push(name.to_owned());
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    assert_eq!(names.len(), events.len());
    for (number, (name, event)) in names.iter().zip(&events).enumerate() {
        assert_eq!(event["type"], name.as_str());
        assert_eq!(event["sequence_number"], number);
    }
    let deltas: String = events
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, PROMPT);
    let kinds: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| *name != "response.output_text.delta")
        .collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], PROMPT);
    assert!(!text.contains("[DONE]"));
    let shapes: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] != "response.output_text.delta")
        .collect();
    assert_json_snapshot!(shapes, {
        "[].response.id" => "[id]", "[].response.created_at" => "[created]",
        "[].response.output[].id" => "[id]", "[].item.id" => "[id]", "[].item_id" => "[id]",
    });
}

#[tokio::test]
async fn what_is_not_implemented_is_a_400_naming_the_field() {
    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("reasoning", json!({"effort": "low"})),
    ] {
        let mut body = json!({"model": "test", "input": "Hi"});
        body[field] = value;
        let (status, text) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["param"], field, "{text}");
    }
    let (status, text) =
        post(json!({"model": "test", "input": "Hi", "tools": [{"type": "web_search"}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains(r#""param":"tools[0].type""#), "{text}");
    let (status, _) = post(json!({"model": "elsewhere", "input": "Hi"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(json!({"model": "test", "input": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A model `test` (byte tokens, ChatML, Hermes tool calls, `<think>` reasoning) whose engine
/// writes `text` and
/// finishes with `reason`; the requests it was given.
fn writing(
    text: &'static str,
    reason: FinishReason,
) -> (axum::Router, Arc<Mutex<Vec<GenerateRequest>>>) {
    writing_with(text, reason, GatewayConfig::default())
}

/// [`writing`], behind a gateway of `config`.
fn writing_with(
    text: &'static str,
    reason: FinishReason,
    config: GatewayConfig,
) -> (axum::Router, Arc<Mutex<Vec<GenerateRequest>>>) {
    let (registry, requests) = registry_writing(text, reason);
    (Gateway::new(registry, config).into_router(), requests)
}

/// The registry of [`writing`]'s model, and the requests its engine is given.
fn registry_writing(
    text: &'static str,
    reason: FinishReason,
) -> (ModelRegistry, Arc<Mutex<Vec<GenerateRequest>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let engine = common::writing(text, reason, move |request| {
        seen.lock().push(request.clone());
    });
    let registry = ModelRegistry::default();
    let entry = ModelEntry::new("test", engine, Tokenizer::bytes())
        .with_chat_template(ChatTemplate::new(common::CHATML).unwrap())
        .with_tool_calls(ToolCallFormat::Hermes)
        .with_reasoning(ReasoningFormat::Think);
    registry.insert(entry);
    (registry, requests)
}

/// POST `body` to `/v1/responses` of `app`: the status and the body as JSON (a stream's events
/// as a list).
async fn respond(app: axum::Router, body: &Value) -> (StatusCode, Value) {
    let (status, bytes) = common::post_json(app, "/v1/responses", body).await;
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    if body["stream"] == true {
        let events = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        return (status, Value::Array(events));
    }
    (status, serde_json::from_str(&text).unwrap())
}

/// A request offering the `weather` function.
fn asking_for_weather() -> Value {
    json!({"model": "test", "input": "Weather in Paris?", "tools": [{"type": "function", "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]})
}

const HERMES_ANSWER: &str =
    r#"Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>"#;

/// What an output item says, without its ids: the text of a message or of reasoning, the name
/// and arguments of a call.
fn said(output: &Value) -> Vec<Value> {
    let items = output.as_array().unwrap();
    items
        .iter()
        .map(|item| match item["type"].as_str().unwrap() {
            "message" | "reasoning" => {
                json!([item["type"], item["content"][0]["text"], item["status"]])
            }
            "function_call" => json!([item["name"], item["arguments"], item["status"]]),
            other => panic!("an item of type {other}"),
        })
        .collect()
}

#[tokio::test]
async fn a_call_the_model_makes_is_a_function_call_item_after_its_text() {
    let (app, _) = writing(HERMES_ANSWER, FinishReason::Stop);
    let (status, whole) = respond(app, &asking_for_weather()).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(
        said(&whole["output"]),
        [
            json!(["message", "Let me check.", "completed"]),
            json!(["weather", r#"{"city":"Paris"}"#, "completed"]),
        ]
    );
    let call = &whole["output"][1];
    assert!(call["call_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(whole["tools"][0]["name"], "weather");
    insta::with_settings!({sort_maps => true}, {
        insta::assert_json_snapshot!(whole, {".id" => "[id]", ".created_at" => "[created]",
            ".output[].id" => "[id]", ".output[].call_id" => "[call id]"})
    });

    // Streamed: the same output, the arguments' deltas adding up to the call's arguments.
    let (app, _) = writing(HERMES_ANSWER, FinishReason::Stop);
    let mut request = asking_for_weather();
    request["stream"] = json!(true);
    let (_, events) = respond(app, &request).await;
    let events = events.as_array().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(said(&last["response"]["output"]), said(&whole["output"]));
    let arguments: String = events
        .iter()
        .filter(|event| event["type"] == "response.function_call_arguments.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .filter(|kind| !kind.ends_with(".delta"))
        .collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let indexes: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "response.output_item.added")
        .map(|event| &event["output_index"])
        .collect();
    assert_eq!(indexes, [0, 1]);
}

#[tokio::test]
async fn a_forced_call_is_the_whole_output_held_to_the_parameters() {
    let (app, requests) = writing(r#"{"city":"Paris"}"#, FinishReason::Stop);
    let mut request = asking_for_weather();
    request["tool_choice"] = json!({"type": "function", "name": "weather"});
    let (status, whole) = respond(app, &request).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(
        said(&whole["output"]),
        [json!(["weather", r#"{"city":"Paris"}"#, "completed"])]
    );
    let format = requests.lock()[0].format.clone();
    let Some(OutputFormat::JsonSchema { schema }) = format else {
        panic!("the parameters' schema reaches the engine: {format:?}");
    };
    assert!(schema.contains(r#""required":["city"]"#), "{schema}");

    // Cut short by the output limit: the call so far, incomplete.
    let (app, _) = writing(r#"{"city":"Pa"#, FinishReason::Length);
    let (_, cut) = respond(app, &request).await;
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(
        said(&cut["output"]),
        [json!(["weather", r#"{"city":"Pa"#, "incomplete"])]
    );

    // "required": the calls of the array the format holds the answer to, one item each.
    let calls = r#"[{"name":"weather","arguments":{"city":"Paris"}},{"name":"weather","arguments":{"city":"Oslo"}}]"#;
    let (app, _) = writing(calls, FinishReason::Stop);
    request["tool_choice"] = json!("required");
    let (_, required) = respond(app, &request).await;
    assert_eq!(
        said(&required["output"]),
        [
            json!(["weather", r#"{"city":"Paris"}"#, "completed"]),
            json!(["weather", r#"{"city":"Oslo"}"#, "completed"]),
        ]
    );
}

#[tokio::test]
async fn with_tool_choice_none_a_call_is_only_text() {
    let (app, _) = writing(HERMES_ANSWER, FinishReason::Stop);
    let mut request = asking_for_weather();
    request["tool_choice"] = json!("none");
    let (_, whole) = respond(app, &request).await;
    assert_eq!(
        said(&whole["output"]),
        [json!(["message", HERMES_ANSWER, "completed"])]
    );
}

#[tokio::test]
async fn a_function_call_and_its_output_go_back_in_as_input() {
    let (app, requests) = writing("18 C in Paris.", FinishReason::Stop);
    let mut request = asking_for_weather();
    request["input"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call-1", "name": "weather", "arguments": "{\"city\":\"Paris\"}",
         "id": "fc_1", "status": "completed"},
        {"type": "function_call_output", "call_id": "call-1", "output": "18 C"},
    ]);
    let (status, whole) = respond(app.clone(), &request).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(
        said(&whole["output"]),
        [json!(["message", "18 C in Paris.", "completed"])]
    );
    // The test's ChatML template shows each message's role and content.
    let prompt = prompt_of(&requests.lock()[0]);
    assert!(
        prompt.contains("<|im_start|>tool\n18 C<|im_end|>"),
        "{prompt}"
    );

    // The three input items are listed, two to a page, in the order they were sent.
    let items = format!(
        "/v1/responses/{}/input_items",
        whole["id"].as_str().unwrap()
    );
    let suffix = whole["id"].as_str().unwrap().strip_prefix("resp_").unwrap();
    let (status, first) = call(
        app.clone(),
        "GET",
        &format!("{items}?order=asc&limit=2"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        first["data"],
        json!([
            {"id": format!("msg_{suffix}-in0"), "type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "Weather in Paris?"}],
             "status": "completed"},
            {"id": format!("fc_{suffix}-in1"), "type": "function_call", "call_id": "call-1",
             "name": "weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
        ])
    );
    assert_eq!(first["has_more"], true);
    assert_eq!(first["first_id"], format!("msg_{suffix}-in0"));
    let after = first["last_id"].as_str().unwrap();
    let next = format!("{items}?order=asc&limit=2&after={after}");
    let (_, second) = call(app.clone(), "GET", &next, None).await;
    assert_eq!(
        second["data"],
        json!([{"id": format!("fco_{suffix}-in2"), "type": "function_call_output",
                "call_id": "call-1", "output": "18 C"}])
    );
    assert_eq!(second["has_more"], false);
    // Newest first by default.
    let (_, newest) = call(app.clone(), "GET", &items, None).await;
    assert_eq!(newest["first_id"], format!("fco_{suffix}-in2"));
    assert_eq!(newest["data"].as_array().unwrap().len(), 3);
    let (status, error) = call(app, "GET", &format!("{items}?limit=500"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "limit", "{error}");

    let mut request = asking_for_weather();
    request["input"] =
        json!([{"type": "function_call_output", "call_id": "call-9", "output": "18 C"}]);
    let (app, _) = writing("", FinishReason::Stop);
    let (status, error) = respond(app, &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["param"], "input[0].call_id", "{error}");
}

#[tokio::test]
async fn tools_the_request_cannot_use_are_a_400_naming_the_field() {
    for (change, field) in [
        (
            json!({"tool_choice": {"type": "function", "name": "news"}}),
            "tool_choice.name",
        ),
        (
            json!({"tool_choice": {"type": "function"}}),
            "tool_choice.name",
        ),
        (
            json!({"tool_choice": {"type": "allowed_tools", "tools": []}}),
            "tool_choice",
        ),
        (
            json!({"tool_choice": "required", "text": {"format": {"type": "json_object"}}}),
            "text.format",
        ),
        (
            json!({"tools": [{"type": "function", "name": "weather", "parameters": {"type": 7}}],
                "tool_choice": "required"}),
            "tools[0].parameters",
        ),
        (
            json!({"tools": [{"type": "function", "description": "no name"}]}),
            "tools[0].name",
        ),
    ] {
        let mut request = asking_for_weather();
        for (key, value) in change.as_object().unwrap() {
            request[key] = value.clone();
        }
        let (app, _) = writing("", FinishReason::Stop);
        let (status, error) = respond(app, &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}");
        assert_eq!(error["error"]["param"], field, "{change}: {error}");
    }
}

#[tokio::test]
async fn reasoning_is_an_item_of_its_own_before_the_message_and_the_call() {
    const THINKING: &str = r#"<think>The user wants weather.</think>Let me check.<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>"#;
    let (app, _) = writing(THINKING, FinishReason::Stop);
    let (_, whole) = respond(app, &asking_for_weather()).await;
    assert_eq!(
        said(&whole["output"]),
        [
            json!(["reasoning", "The user wants weather.", "completed"]),
            json!(["message", "Let me check.", "completed"]),
            json!(["weather", r#"{"city":"Paris"}"#, "completed"]),
        ]
    );
    assert_eq!(whole["output"][0]["summary"], json!([]));

    let (app, _) = writing(THINKING, FinishReason::Stop);
    let mut request = asking_for_weather();
    request["stream"] = json!(true);
    let (_, events) = respond(app, &request).await;
    let events = events.as_array().unwrap();
    let reasoning: String = events
        .iter()
        .filter(|event| event["type"] == "response.reasoning_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    assert_eq!(reasoning, "The user wants weather.");
    let opened: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "response.content_part.added")
        .map(|event| &event["part"]["type"])
        .collect();
    assert_eq!(opened, ["reasoning_text", "output_text"]);
    let last = events.last().unwrap();
    assert_eq!(said(&last["response"]["output"]), said(&whole["output"]));
}

/// The prompt the engine was given, as text (byte tokens).
fn prompt_of(request: &GenerateRequest) -> String {
    let bytes: Vec<u8> = request.tokens.iter().map(|&token| token as u8).collect();
    String::from_utf8(bytes).unwrap()
}

/// `method` `path` of `app` with no body, as the caller with `key` (if any): the status and
/// the body as JSON.
async fn call(
    app: axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> (StatusCode, Value) {
    common::send(app, method, path, key, None).await
}

/// [`respond`] (not streamed) as the caller with `key`.
async fn respond_as(app: axum::Router, key: &str, body: &Value) -> (StatusCode, Value) {
    common::send(app, "POST", "/v1/responses", Some(key), Some(body)).await
}

#[tokio::test]
async fn a_stored_response_is_retrieved_continued_from_and_deleted() {
    let (app, requests) = writing("Paris.", FinishReason::Stop);
    let ask = json!({"model": "test", "input": "Capital of France?", "instructions": "Be brief."});
    let (status, first) = respond(app.clone(), &ask).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["store"], true);
    let id = first["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}");
    let (status, stored) = call(app.clone(), "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, first);

    // Continued: the earlier turn and its answer come before the new input; its instructions
    // are not carried over.
    let follow = json!({"model": "test", "input": "And of Italy?", "previous_response_id": id});
    let (status, second) = respond(app.clone(), &follow).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["previous_response_id"], id);
    // Its input items are its own input, not the earlier turn's.
    let items = format!(
        "/v1/responses/{}/input_items",
        second["id"].as_str().unwrap()
    );
    let (status, listed) = call(app.clone(), "GET", &items, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let texts: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["content"][0]["text"])
        .collect();
    assert_eq!(texts, [&json!("And of Italy?")]);
    assert_eq!(
        prompt_of(&requests.lock()[1]),
        "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n\
         <|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    );
    // The chain goes on: the third turn sees both earlier ones.
    let third =
        json!({"model": "test", "input": "And of Spain?", "previous_response_id": second["id"]});
    respond(app.clone(), &third).await;
    assert_eq!(
        prompt_of(&requests.lock()[2])
            .matches("<|im_start|>user")
            .count(),
        3
    );

    let (status, deleted) = call(app.clone(), "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        deleted,
        json!({"id": id, "object": "response.deleted", "deleted": true})
    );
    let (status, _) = call(app.clone(), "GET", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(app.clone(), "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = call(app.clone(), "GET", &format!("{path}/input_items"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "response_not_found");
    let (status, error) = respond(app.clone(), &follow).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "previous_response_not_found");
    assert_eq!(error["error"]["param"], "previous_response_id");

    // `store: false`: answered, not kept.
    let mut unstored = ask.clone();
    unstored["store"] = json!(false);
    let (_, answer) = respond(app.clone(), &unstored).await;
    assert_eq!(answer["store"], false);
    let path = format!("/v1/responses/{}", answer["id"].as_str().unwrap());
    let (status, _) = call(app, "GET", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_streamed_response_is_stored_as_its_last_event_gives_it() {
    let (app, _) = writing(HERMES_ANSWER, FinishReason::Stop);
    let mut request = asking_for_weather();
    request["stream"] = json!(true);
    let (_, events) = respond(app.clone(), &request).await;
    let last = &events.as_array().unwrap().last().unwrap()["response"];
    let path = format!("/v1/responses/{}", last["id"].as_str().unwrap());
    let (status, stored) = call(app.clone(), "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&stored, last);

    // Its call's output, sent after it, answers the call it stored.
    let (_, answered) = respond(
        app,
        &json!({"model": "test", "previous_response_id": last["id"],
                "input": [{"type": "function_call_output", "call_id": last["output"][1]["call_id"], "output": "18 C"}]}),
    )
    .await;
    assert_eq!(answered["status"], "completed", "{answered}");
}

#[tokio::test]
async fn a_response_stored_with_one_key_is_not_found_with_another() {
    let keys = dynamo_openai::ApiKeys::new(["sk-one", "sk-two"]);
    let (app, _) = writing_with(
        "Paris.",
        FinishReason::Stop,
        GatewayConfig::default().with_api_keys(keys),
    );
    let (_, first) = respond_as(
        app.clone(),
        "sk-one",
        &json!({"model": "test", "input": "Hi"}),
    )
    .await;
    let path = format!("/v1/responses/{}", first["id"].as_str().unwrap());
    let (status, _) = call(app.clone(), "GET", &path, Some("sk-one")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(app.clone(), "GET", &path, Some("sk-two")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(app.clone(), "DELETE", &path, Some("sk-two")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let items = format!("{path}/input_items");
    let (status, _) = call(app.clone(), "GET", &items, Some("sk-two")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(app, "GET", &items, Some("sk-one")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_the_store_off_store_and_previous_response_id_are_refused() {
    let config = GatewayConfig::default().with_response_store_bytes(0);
    for (field, value) in [
        ("store", json!(true)),
        ("previous_response_id", json!("resp_1")),
    ] {
        let (app, _) = writing_with("Paris.", FinishReason::Stop, config.clone());
        let mut request = json!({"model": "test", "input": "Hi"});
        request[field] = value;
        let (status, error) = respond(app, &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["param"], field, "{error}");
    }
    let (app, _) = writing_with("Paris.", FinishReason::Stop, config);
    let (_, answer) = respond(app, &json!({"model": "test", "input": "Hi"})).await;
    assert_eq!(answer["store"], false);
}

/// [`writing`], behind a gateway of `config` that keeps its responses in `store`.
fn writing_into(
    text: &'static str,
    config: GatewayConfig,
    store: Arc<dyn ObjectStore>,
) -> (axum::Router, Arc<Mutex<Vec<GenerateRequest>>>) {
    let (registry, requests) = registry_writing(text, FinishReason::Stop);
    let gateway = Gateway::new(registry, config).with_shared_responses(store, "responses".into());
    (gateway.into_router(), requests)
}

#[tokio::test]
async fn gateways_sharing_a_store_continue_each_others_conversations() {
    // A directory both gateways write to, as frontends on one shared volume would.
    let folder = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(folder.path()).unwrap());
    let (first, _) = writing_into("Paris.", GatewayConfig::default(), store.clone());
    let (second, requests) = writing_into("Rome.", GatewayConfig::default(), store.clone());

    let ask = json!({"model": "test", "input": "Capital of France?"});
    let (status, asked) = respond(first.clone(), &ask).await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(asked["store"], true);
    let path = format!("/v1/responses/{}", asked["id"].as_str().unwrap());
    let (status, stored) = call(second.clone(), "GET", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, asked);

    // Continued on the other gateway, streamed: its prompt holds the first gateway's turn, and
    // its last event comes once it is stored, so the first gateway has it at once.
    let follow = json!({"model": "test", "input": "And of Italy?", "stream": true,
        "previous_response_id": asked["id"]});
    let (_, events) = respond(second.clone(), &follow).await;
    assert_eq!(
        prompt_of(&requests.lock()[0]),
        "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n\
         <|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    );
    let last = &events.as_array().unwrap().last().unwrap()["response"];
    assert_eq!(last["status"], "completed");
    let items = format!("/v1/responses/{}/input_items", last["id"].as_str().unwrap());
    let (status, listed) = call(first.clone(), "GET", &items, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["data"][0]["content"][0]["text"], "And of Italy?");

    // Deleted through one, gone from both.
    let (status, _) = call(second.clone(), "DELETE", &path, None).await;
    assert_eq!(status, StatusCode::OK);
    for app in [first.clone(), second.clone()] {
        let (status, _) = call(app.clone(), "GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(app, "DELETE", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let mut follow = follow;
    follow["stream"] = json!(false);
    let (status, error) = respond(first, &follow).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "previous_response_not_found");
}

#[tokio::test]
async fn in_a_shared_store_a_response_is_found_only_with_the_key_that_stored_it() {
    let folder = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(folder.path()).unwrap());
    let keys = || dynamo_openai::ApiKeys::new(["sk-one", "sk-two"]);
    let config = GatewayConfig::default().with_api_keys(keys());
    let (first, _) = writing_into("Paris.", config.clone(), store.clone());
    let (second, _) = writing_into("Rome.", config, store);
    let (status, first_answer) =
        respond_as(first, "sk-one", &json!({"model": "test", "input": "Hi"})).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/v1/responses/{}", first_answer["id"].as_str().unwrap());
    let (status, _) = call(second.clone(), "GET", &path, Some("sk-two")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(second.clone(), "DELETE", &path, Some("sk-two")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let follow =
        json!({"model": "test", "input": "More", "previous_response_id": first_answer["id"]});
    let (status, error) = respond_as(second.clone(), "sk-two", &follow).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "previous_response_not_found");
    let (status, _) = call(second, "GET", &path, Some("sk-one")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_store_that_fails_is_a_503_and_the_response_says_it_was_not_stored() {
    // A store rooted under a plain file: every write and read fails, as an unreachable bucket's.
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("not-a-folder");
    std::fs::write(&file, b"").unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&file).unwrap());
    let (app, _) = writing_into("Paris.", GatewayConfig::default(), store);

    let ask = json!({"model": "test", "input": "Capital of France?"});
    let (status, answer) = respond(app.clone(), &ask).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["store"], false);
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (_, events) = respond(app.clone(), &streamed).await;
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["store"], false);

    let path = format!("/v1/responses/{}", answer["id"].as_str().unwrap());
    for method in ["GET", "DELETE"] {
        let (status, error) = call(app.clone(), method, &path, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method}");
        assert_eq!(
            error["error"]["type"], "service_unavailable_error",
            "{error}"
        );
    }
    let follow = json!({"model": "test", "input": "More", "previous_response_id": answer["id"]});
    let (status, _) = respond(app, &follow).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
