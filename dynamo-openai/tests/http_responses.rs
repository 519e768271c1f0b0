//! `/v1/responses` as an agent framework calls it: text or messages in, one assistant message
//! out, whole or as the named server-sent events of OpenAI's Responses API, and a 400 naming
//! every field this gateway does not implement.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::http::StatusCode;
use dynamo_core::{BoxEngine, EchoEngine};
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
        ("store", json!(true)),
        ("tools", json!([{"type": "web_search"}])),
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
    let (status, _) = post(json!({"model": "elsewhere", "input": "Hi"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(json!({"model": "test", "input": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
