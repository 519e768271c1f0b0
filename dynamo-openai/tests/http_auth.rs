//! API keys: a request without a valid `Authorization: Bearer` key gets a 401 with OpenAI's
//! error body, the health probes stay open, and the key is never echoed back.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::{ApiKeys, GatewayConfig};
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

const KEY: &str = "sk-right-key-0123456789";
const WRONG: &str = "sk-wrong-key-9876543210";

fn app(config: GatewayConfig) -> axum::Router {
    common::app(BoxEngine::new(EchoEngine::new()), config)
}

fn locked() -> axum::Router {
    app(GatewayConfig::default().with_api_keys(ApiKeys::new(["sk-other", KEY])))
}

/// `method path` with `authorization` if given: the status, the `WWW-Authenticate` header and
/// the body as text.
async fn call(
    app: axum::Router,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = json!({"model": "test", "prompt": "Hello", "max_tokens": 2}).to_string();
    let body = if method == "POST" {
        Body::from(body)
    } else {
        Body::empty()
    };
    let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        challenge,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_with_openai_bodies() {
    let mut bodies = serde_json::Map::new();
    for (name, authorization) in [
        ("no_key", None),
        ("wrong_key", Some(format!("Bearer {WRONG}"))),
        ("not_bearer", Some(format!("Basic {KEY}"))),
        ("empty_bearer", Some("Bearer ".to_owned())),
    ] {
        let (status, challenge, text) = call(
            locked(),
            "POST",
            "/v1/completions",
            authorization.as_deref(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {text}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{name}");
        assert!(
            !text.contains(WRONG) && !text.contains(KEY),
            "{name}: {text}"
        );
        bodies.insert(name.to_owned(), serde_json::from_str(&text).unwrap());
    }
    assert_json_snapshot!("unauthorized_bodies", Value::Object(bodies));
}

#[tokio::test]
async fn the_right_key_is_served() {
    for authorization in [format!("Bearer {KEY}"), format!("bearer  {KEY} ")] {
        let (status, _, text) =
            call(locked(), "POST", "/v1/completions", Some(&authorization)).await;
        assert_eq!(status, StatusCode::OK, "{authorization}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["choices"][0]["text"], "He");
    }
    let other = Some("Bearer sk-other");
    let (status, _, _) = call(locked(), "GET", "/v1/models", other).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn probes_are_open_and_metrics_only_when_opened() {
    for path in ["/health", "/live", "/ready"] {
        let (status, _, text) = call(locked(), "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
    }
    for path in ["/v1/models", "/metrics", "/openapi.json", "/no/such/route"] {
        let (status, _, _) = call(locked(), "GET", path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let opened = GatewayConfig::default()
        .with_api_keys(ApiKeys::new([KEY]))
        .with_open_metrics(true);
    let (status, _, _) = call(app(opened), "GET", "/metrics", None).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_keys_the_gateway_is_open() {
    let (status, _, text) = call(
        app(GatewayConfig::default()),
        "POST",
        "/v1/completions",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn the_key_check_comes_before_the_body_limit() {
    let config = GatewayConfig::default()
        .with_api_keys(ApiKeys::new([KEY]))
        .with_body_limit(16);
    let (status, _, _) = call(app(config.clone()), "POST", "/v1/completions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let right = format!("Bearer {KEY}");
    let (status, _, text) = call(app(config), "POST", "/v1/completions", Some(&right)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "payload_too_large");
}
