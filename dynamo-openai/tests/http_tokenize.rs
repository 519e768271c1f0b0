//! `/tokenize` and `/detokenize` as a tool that counts tokens calls them: a text and a
//! conversation come back as the ids generation would use, ids come back as text, and every
//! malformed request gets a 400 (or a 404 for an unknown model) that names what is wrong.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::CHATML;
use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::{ChatTemplate, GatewayConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

/// insta's `assert_json_snapshot!` with map keys sorted, so that a snapshot does not depend on
/// whether serde_json keeps insertion order (its `preserve_order` feature, which a dependency
/// elsewhere in the workspace turns on in workspace-wide builds).
macro_rules! assert_json_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!($($arg)*) })
    };
}

fn app() -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), GatewayConfig::default())
}

async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn ids(value: &Value) -> Vec<u32> {
    serde_json::from_value(value["tokens"].clone()).unwrap()
}

#[tokio::test]
async fn a_text_comes_back_as_its_tokens_and_the_tokens_as_the_text() {
    let (status, tokenized) = post("/tokenize", json!({"model": "test", "prompt": "hé!"})).await;
    assert_eq!(status, StatusCode::OK);
    // The byte tokenizer: one id per UTF-8 byte.
    assert_eq!(ids(&tokenized), [104, 195, 169, 33]);
    assert_eq!(tokenized["count"], 4);
    assert_json_snapshot!("tokenize", tokenized);

    let (status, text) = post(
        "/detokenize",
        json!({"model": "test", "tokens": tokenized["tokens"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_json_snapshot!("detokenize", text);
    assert_eq!(text["prompt"], "hé!");
}

#[tokio::test]
async fn a_conversation_is_rendered_with_the_chat_template_first() {
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let rendered = ChatTemplate::new(CHATML)
        .unwrap()
        .render(messages.as_array().unwrap(), None, true)
        .unwrap();
    let (status, tokenized) =
        post("/tokenize", json!({"model": "test", "messages": messages})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&tokenized),
        rendered.bytes().map(u32::from).collect::<Vec<_>>()
    );

    // Without the assistant's opening, the prompt is shorter.
    let (_, bare) = post(
        "/tokenize",
        json!({"model": "test", "messages": messages, "add_generation_prompt": false}),
    )
    .await;
    assert!(bare["count"].as_u64().unwrap() < tokenized["count"].as_u64().unwrap());
}

#[tokio::test]
async fn malformed_requests_say_what_is_wrong() {
    let cases = [
        (
            "/tokenize",
            json!({"model": "test"}),
            StatusCode::BAD_REQUEST,
            "exactly one",
        ),
        (
            "/tokenize",
            json!({"model": "test", "prompt": "a", "messages": []}),
            StatusCode::BAD_REQUEST,
            "exactly one",
        ),
        (
            "/tokenize",
            json!({"model": "test", "prompt": "a", "return_token_strs": true}),
            StatusCode::BAD_REQUEST,
            "return_token_strs",
        ),
        (
            "/detokenize",
            json!({"model": "test", "tokens": [104, 256]}),
            StatusCode::BAD_REQUEST,
            "256",
        ),
        (
            "/detokenize",
            json!({"model": "nope", "tokens": [104]}),
            StatusCode::NOT_FOUND,
            "nope",
        ),
    ];
    for (path, body, expected, mentions) in cases {
        let (status, answer) = post(path, body.clone()).await;
        assert_eq!(status, expected, "{path} {body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{path} {body}: {message}");
    }
    let (_, answer) = post("/detokenize", json!({"model": "test", "tokens": [256]})).await;
    assert_eq!(answer["error"]["param"], "tokens");
}
