//! `cache_salt` on `/v1/chat/completions`, `/v1/completions` and `/v1/responses`: checked as
//! vLLM checks it, passed to the engine, and hashed with the prompt where the router hashes it.

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

mod common;

use axum::http::StatusCode;
use common::RecordingEngine;
use dynamo_core::{BlockSize, BoxEngine, KvEvent, KvEventData, StorageTier, WorkerId};
use dynamo_openai::GatewayConfig;
use dynamo_router::{KvIndex, RouteRequest};
use insta::assert_json_snapshot;
use serde_json::{Value, json};

async fn post(app: axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = common::post_json(app, path, &body).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn chat(salt: Value) -> Value {
    json!({
        "model": "test",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "cache_salt": salt,
    })
}

fn completion(prompt: &str, salt: Value) -> Value {
    json!({"model": "test", "prompt": prompt, "max_tokens": 2, "cache_salt": salt})
}

fn response(salt: Value) -> Value {
    json!({"model": "test", "input": "Hi", "max_output_tokens": 2, "cache_salt": salt})
}

/// `body` without its `cache_salt` key.
fn unsalted(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("cache_salt");
    body
}

/// Send each body to its path through one gateway; the requests its engine received, in order.
async fn received(bodies: Vec<(&str, Value)>) -> Vec<dynamo_core::GenerateRequest> {
    let engine = RecordingEngine::default();
    let app = common::app(BoxEngine::new(engine.clone()), GatewayConfig::default());
    for (path, body) in bodies {
        let (status, answer) = post(app.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    engine.requests()
}

#[tokio::test]
async fn the_salt_reaches_the_engine_from_each_endpoint() {
    let requests = received(vec![
        ("/v1/chat/completions", chat(json!("tenant-a"))),
        ("/v1/completions", completion("Hi", json!("tenant-b"))),
        ("/v1/responses", response(json!("tenant-c"))),
        ("/v1/chat/completions", chat(json!(null))),
        ("/v1/completions", unsalted(completion("Hi", json!(null)))),
        ("/v1/responses", response(json!(null))),
        ("/v1/responses", unsalted(response(json!(null)))),
    ])
    .await;
    let salts: Vec<Option<&str>> = requests.iter().map(|r| r.cache_salt.as_deref()).collect();
    assert_eq!(
        salts,
        [
            Some("tenant-a"),
            Some("tenant-b"),
            Some("tenant-c"),
            None,
            None,
            None,
            None
        ]
    );
}

#[tokio::test]
async fn the_router_finds_a_salted_prefix_only_under_the_same_salt() {
    // 40 byte tokens: 10 blocks of 4.
    let prompt = "The keeper wrote down the tide each day.";
    let requests = received(
        [
            json!("tenant-a"),
            json!("tenant-a"),
            json!("tenant-b"),
            json!(null),
        ]
        .into_iter()
        .map(|salt| ("/v1/completions", completion(prompt, salt)))
        .collect(),
    )
    .await;
    let block_size = BlockSize::new(4).unwrap();
    // The first request's blocks as a worker that served it reports them (native workers hash
    // with the request's own hasher, salt included).
    let first = &requests[0];
    let mut index = KvIndex::new(block_size);
    index
        .apply(&KvEvent {
            worker: WorkerId::new(1),
            event_id: 0,
            tier: StorageTier::Device,
            data: KvEventData::Stored {
                parent: None,
                block_size,
                blocks: first.block_hasher(block_size).hash_blocks(&first.tokens),
            },
        })
        .unwrap();
    // What the router looks up for each request: `RouteRequest::new` hashes its prompt.
    let found: Vec<(usize, u32)> = requests[1..]
        .iter()
        .map(|request| {
            let route = RouteRequest::new(request, block_size);
            let overlap = index.overlaps(&route.blocks).get(WorkerId::new(1)).device;
            (route.blocks.len(), overlap)
        })
        .collect();
    assert_eq!(found, [(10, 10), (10, 0), (10, 0)]);
}

#[tokio::test]
async fn a_salt_that_is_empty_or_not_a_string_is_refused_by_name() {
    let engine = RecordingEngine::default();
    let app = common::app(BoxEngine::new(engine.clone()), GatewayConfig::default());
    let mut errors = serde_json::Map::new();
    for (name, salt) in [
        ("empty", json!("")),
        ("number", json!(7)),
        ("list", json!(["tenant-a"])),
    ] {
        for (path, body) in [
            ("/v1/chat/completions", chat(salt.clone())),
            ("/v1/completions", completion("Hi", salt.clone())),
            ("/v1/responses", response(salt.clone())),
        ] {
            let (status, answer) = post(app.clone(), path, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains("cache_salt"), "{path} {answer}");
            errors.insert(format!("{name} {path}"), answer);
        }
    }
    assert!(
        engine.requests().is_empty(),
        "no refused request reaches it"
    );
    assert_json_snapshot!(errors);
}
