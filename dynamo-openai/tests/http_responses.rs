//! `/v1/responses` as an agent framework calls it: text, messages, function calls and their
//! outputs in; an assistant message and the calls the model made out, whole or as the named
//! server-sent events of OpenAI's Responses API; and a 400 naming every field this gateway
//! does not implement.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::http::StatusCode;
use common::responses::{HERMES_ANSWER, asking_for_weather, call, prompt_of, respond, writing};
use dynamo_core::{BoxEngine, EchoEngine, FinishReason, OutputFormat};
use dynamo_openai::GatewayConfig;
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
