//! Stored responses of `/v1/responses`: retrieved, continued from with `previous_response_id`,
//! deleted; found only with the API key that stored them; refused with the store off; shared by
//! gateways through one object store, and a store that fails answered with a 503.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::responses::{
    HERMES_ANSWER, asking_for_weather, call, prompt_of, registry_writing, respond, writing,
    writing_with,
};
use dynamo_core::{FinishReason, GenerateRequest};
use dynamo_openai::object_store::ObjectStore;
use dynamo_openai::object_store::local::LocalFileSystem;
use dynamo_openai::{Gateway, GatewayConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};

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
