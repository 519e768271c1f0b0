//! The main job serves `/v1/embeddings` with all-MiniLM-L6-v2 by default: its vectors agree
//! with reference vectors computed independently (a NumPy forward pass,
//! `engines/candle/tests/data/minilm_reference.py`), and rank meaning (the base64 encoding is
//! checked in `dynamo-openai/tests/http_embeddings.rs` and by the official client in
//! `openai_client.py`); `--embedding-model none` turns the route's model off.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use dynamo_transport::local::free_port;
use serde_json::{Value, json};
use support::{Frontend, Process};

const REFERENCE: &str = include_str!("../../engines/candle/tests/data/minilm_reference.json");

async fn embeddings(frontend: &Frontend, body: &Value) -> (u16, Value) {
    frontend.post_json("/v1/embeddings", body).await
}

fn vector(value: &Value) -> Vec<f32> {
    serde_json::from_value(value.clone()).expect("a vector")
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

async fn serve(extra: &[&str]) -> (Process, Frontend) {
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["--engine", "mocker", "--port", &port];
    args.extend_from_slice(extra);
    let process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    (process, frontend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_job_embeds_as_the_reference_does() {
    let (_serve, frontend) = serve(&[]).await;
    let reference: Value = serde_json::from_str(REFERENCE).expect("the reference");
    let reference = reference.as_array().expect("a list");
    let texts: Vec<&str> = reference
        .iter()
        .map(|entry| entry["text"].as_str().expect("a text"))
        .collect();

    let body = json!({"model": "all-minilm-l6-v2", "input": texts});
    let (status, answer) = embeddings(&frontend, &body).await;
    assert_eq!(status, 200, "{answer}");
    let ids: usize = reference
        .iter()
        .map(|entry| entry["ids"].as_array().expect("ids").len())
        .sum();
    assert_eq!(
        answer["usage"]["prompt_tokens"], ids,
        "the reference's tokens"
    );
    let vectors: Vec<Vec<f32>> = (0..3)
        .map(|index| vector(&answer["data"][index]["embedding"]))
        .collect();
    for (entry, ours) in reference.iter().zip(&vectors) {
        assert_eq!(ours.len(), 384);
        let theirs = vector(&entry["embedding"]);
        let cosine = dot(ours, &theirs) / dot(&theirs, &theirs).sqrt() / dot(ours, ours).sqrt();
        assert!(cosine >= 0.9999, "{}: cosine {cosine}", entry["text"]);
    }
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_embedding_model_the_route_says_so() {
    let (_serve, frontend) = serve(&["--embedding-model", "none"]).await;
    let body = json!({"model": "all-minilm-l6-v2", "input": "hello"});
    let (status, answer) = embeddings(&frontend, &body).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "model_not_found");
}
