//! `dynamo-serve frontend --router kv --engine-at trtllm=URL,events=poll` end to end: two
//! stand-ins for `trtllm-serve` (fixtures written from TensorRT-LLM's source); the one whose
//! `POST /kv_cache_events` answer stores a prompt's blocks draws every request for that
//! prompt.

#[expect(dead_code, reason = "these tests use part of the shared support")]
mod support;

#[path = "../../engines/trtllm/tests/support/server.rs"]
mod trtllm;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value as Json, json};
use trtllm::{StandIn, events_answer, trtllm_fixture};

/// The frontend's default `--block-size`, and so the stand-ins' `tokens_per_block`.
const BLOCK: usize = 16;

/// A TensorRT-LLM server answering every completion with the same whole answer (the
/// frontend's clients here do not stream), idle in its iteration statistics.
async fn trtllm_server() -> StandIn {
    StandIn::start(HashMap::from([
        (
            "/v1/completions".to_owned(),
            trtllm_fixture("whole_token_ids.http"),
        ),
        ("/metrics".to_owned(), events_answer("[]")),
    ]))
    .await
}

/// `trtllm-serve`'s answer to `POST /kv_cache_events` after it stored `tokens`' full blocks
/// as one chain (made-up engine hashes), as its `KVCacheEventSerializer` writes events.
fn stored(tokens: &[u32]) -> Vec<u8> {
    let blocks: Vec<Json> = tokens
        .chunks_exact(BLOCK)
        .enumerate()
        .map(|(at, block)| {
            let tokens: Vec<Json> = block
                .iter()
                .map(|&id| json!({"type": "unique_token", "token_id": id, "token_extra_id": 0}))
                .collect();
            json!({"type": "stored_block", "block_hash": 9000 + at, "tokens": tokens,
                   "cache_level": 0, "priority": 35})
        })
        .collect();
    let events = json!([
        {"event_id": 0, "data": {"type": "created", "num_blocks_per_cache_level": [512, 0]},
         "window_size": 4096},
        {"event_id": 1, "data": {"type": "stored", "parent_hash": null, "blocks": blocks},
         "window_size": 4096},
    ]);
    events_answer(&events.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_polled_from_a_trtllm_server_draw_its_prompts_to_it() {
    let (plain, holder) = (trtllm_server().await, trtllm_server().await);
    let engines = [
        format!("trtllm={},id=1,events=poll", plain.url()),
        format!("trtllm={},id=2,events=poll:20", holder.url()),
    ];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    let prompt = "The history of the city begins with a small settlement on the river, where \
                  traders met to exchange grain, salt and cloth in the early spring of each year.";
    let tokens = frontend
        .tokenize(&json!({"model": "smollm2", "prompt": prompt}))
        .await;
    let blocks = tokens.len() / BLOCK;
    assert!(blocks >= 2, "{} tokens", tokens.len());

    // The second server's next answer stores the prompt's blocks; the frontend polls it.
    holder.push_events(stored(&tokens));
    frontend
        .wait_for_metrics(
            "the polled events never reached the index",
            Duration::from_secs(30),
            |metrics| {
                metrics
                    .lines()
                    .filter(|line| line.starts_with("dynamo_router_indexed_blocks"))
                    .filter(|line| line.contains("worker=\"2/"))
                    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    .any(|indexed| indexed >= blocks as f64)
            },
        )
        .await;
    assert_eq!(holder.pending_events(), 0);
    assert!(
        plain.count("POST /kv_cache_events") > 0,
        "both servers are polled"
    );

    // Every request for the prompt goes to the server that caches it, and is answered with
    // its ids detokenized by the gateway.
    let body = json!({"model": "smollm2", "prompt": prompt, "max_tokens": 4});
    for _ in 0..6 {
        let (status, answer) = frontend.complete_with(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    }
    assert_eq!(
        plain.count("POST /v1/completions"),
        0,
        "none to the other server"
    );
    assert_eq!(holder.count("POST /v1/completions"), 6);
}
