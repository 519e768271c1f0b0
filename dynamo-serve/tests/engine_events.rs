//! `dynamo-serve frontend --router kv --engine-at vllm=URL,events=ADDR` end to end: two vLLM
//! replay servers, each with a ZMQ PUB socket built here that publishes KV events in vLLM's
//! layout; the blocks one server announces draw the requests for that prompt to it, and blocks
//! announced under a cache salt only the requests with that salt; a server whose publisher
//! closes leaves the index and is followed again when it comes back, and one that starts after
//! the frontend is followed; each data-parallel engine of a server (`dp=2`) is a worker of its
//! own, its events from its own port; what the decoder skips or refuses shows on the
//! frontend's `/metrics`, as what it skips of a TensorRT-LLM server's polled events does.

#[expect(dead_code, reason = "these tests use part of the shared support")]
mod support;

#[path = "../../engines/upstream/tests/support/replay.rs"]
mod replay;

#[expect(
    clippy::duplicate_mod,
    reason = "the vLLM and TensorRT-LLM stand-ins each include the same request reader"
)]
#[path = "../../engines/trtllm/tests/support/server.rs"]
mod trtllm;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use replay::Replay;
use rmpv::Value;
use serde_json::json;
use zeromq::{PubSocket, Socket, SocketSend, ZmqMessage};

/// The frontend's default `--block-size`.
const BLOCK: usize = 16;

/// A vLLM server answering every completion with the same replayed answer (the frontend asks
/// for whole answers: its clients here do not stream).
async fn vllm_server() -> Replay {
    let answer = std::fs::read(
        replay::package_dir().join("../engines/upstream/tests/fixtures/vllm_whole_token_ids.http"),
    )
    .expect("the fixture");
    Replay::start(HashMap::from([("/v1/completions".to_owned(), answer)])).await
}

/// A PUB socket on a free loopback port, and its address.
async fn publisher() -> (PubSocket, String) {
    let mut socket = PubSocket::new();
    let endpoint = socket
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bound")
        .to_string();
    (socket, endpoint)
}

/// One message as vLLM's publisher sends it: topic, sequence number, and the batch
/// `[timestamp, [["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium]], rank]`
/// storing `tokens`' full blocks as one chain, with made-up engine hashes.
fn stored(sequence: i64, tokens: &[u32]) -> ZmqMessage {
    let blocks = tokens.len() / BLOCK;
    let hashes: Vec<Value> = (0..blocks).map(|b| Value::from(9000 + b as u64)).collect();
    let ids: Vec<Value> = tokens[..blocks * BLOCK]
        .iter()
        .map(|&t| Value::from(t))
        .collect();
    let event = Value::Array(vec![
        "BlockStored".into(),
        Value::Array(hashes),
        Value::Nil,
        Value::Array(ids),
        Value::from(BLOCK as u64),
        Value::Nil,
        "GPU".into(),
    ]);
    message(sequence, event)
}

/// The same blocks as [`stored`] in vLLM's newer layout (each event a map, since vLLM's PR
/// #42892), stored by a request salted with `salt`: vLLM puts the salt among the extra keys of
/// the sequence's first block only.
fn stored_salted(sequence: i64, tokens: &[u32], salt: &str) -> ZmqMessage {
    let blocks = tokens.len() / BLOCK;
    let hashes: Vec<Value> = (0..blocks).map(|b| Value::from(7000 + b as u64)).collect();
    let ids: Vec<Value> = tokens[..blocks * BLOCK]
        .iter()
        .map(|&t| Value::from(t))
        .collect();
    let mut extra_keys = vec![Value::Array(vec![salt.into()])];
    extra_keys.resize(blocks, Value::Nil);
    let event = Value::Map(vec![
        ("type".into(), "BlockStored".into()),
        ("block_hashes".into(), Value::Array(hashes)),
        ("parent_block_hash".into(), Value::Nil),
        ("token_ids".into(), Value::Array(ids)),
        ("block_size".into(), Value::from(BLOCK as u64)),
        ("lora_id".into(), Value::Nil),
        ("medium".into(), "GPU".into()),
        ("lora_name".into(), Value::Nil),
        ("extra_keys".into(), Value::Array(extra_keys)),
    ]);
    message(sequence, event)
}

/// One ZMQ message of vLLM's publisher: topic, sequence number, and the batch
/// `[timestamp, [event], rank]` in msgpack.
fn message(sequence: i64, event: Value) -> ZmqMessage {
    let batch = Value::Array(vec![
        Value::from(1.0),
        Value::Array(vec![event]),
        Value::from(0),
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &batch).expect("msgpack");
    frames(sequence, payload)
}

/// A message of `payload` as it is, numbered `sequence`.
fn frames(sequence: i64, payload: Vec<u8>) -> ZmqMessage {
    let frames = vec![
        Bytes::from_static(b"kv"),
        Bytes::copy_from_slice(&sequence.to_be_bytes()),
        Bytes::from(payload),
    ];
    ZmqMessage::try_from(frames).expect("frames")
}

/// One message of several events, each a map in vLLM's newer layout.
fn message_of(sequence: i64, events: Vec<Vec<(&str, Value)>>) -> ZmqMessage {
    let events = events
        .into_iter()
        .map(|fields| Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect()))
        .collect();
    let batch = Value::Array(vec![Value::from(1.0), Value::Array(events), Value::from(0)]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &batch).expect("msgpack");
    frames(sequence, payload)
}

/// A counter of the frontend's metrics for `worker` with `label` (`name="value"`); 0 when
/// absent. `worker` is an id (any data-parallel rank; the first series found) or `ID/RANK`.
fn counter(metrics: &str, name: &str, worker: &str, label: &str) -> f64 {
    let named = |line: &str| {
        line.contains(&format!("worker=\"{worker}/"))
            || line.contains(&format!("worker=\"{worker}\""))
    };
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| named(line) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The number of blocks the frontend's index holds for `worker` (as [`counter`] names it),
/// from its metrics.
async fn indexed(frontend: &support::Frontend, worker: &str) -> f64 {
    counter(
        &frontend.metrics().await,
        "dynamo_router_indexed_blocks",
        worker,
        "",
    )
}

/// A publisher, and the message it announces for a sequence number.
type Announcer<'a> = (&'a mut PubSocket, &'a dyn Fn(i64) -> ZmqMessage);

/// Publish each announcer's message, numbered on, until the frontend's index holds at least
/// `blocks` blocks of each of `workers` (a subscriber that has just connected misses what was
/// published before); the last sequence number used.
async fn announce_until_indexed(
    frontend: &support::Frontend,
    announcers: &mut [Announcer<'_>],
    workers: &[&str],
    blocks: f64,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sequence = 0;
    loop {
        sequence += 1;
        for (socket, message) in announcers.iter_mut() {
            socket.send(message(sequence)).await.expect("published");
        }
        let mut held = true;
        for &worker in workers {
            held &= indexed(frontend, worker).await >= blocks;
        }
        if held {
            return sequence;
        }
        assert!(
            Instant::now() < deadline,
            "the events never reached the index: {}",
            frontend.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completions(server: &Replay) -> usize {
    server.requests_to("POST /v1/completions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_from_a_vllm_server_draw_its_prompts_to_it() {
    let (plain, holder) = (vllm_server().await, vllm_server().await);
    let (_plain_events, plain_endpoint) = publisher().await;
    let (mut holder_events, holder_endpoint) = publisher().await;
    let engines = [
        format!("vllm={},id=1,events={plain_endpoint}", plain.url()),
        format!("vllm={},id=2,events={holder_endpoint}", holder.url()),
    ];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    let prompt = "The history of the city begins with a small settlement on the river, where \
                  traders met to exchange grain, salt and cloth in the early spring of each year.";
    let tokens = frontend
        .tokenize(&json!({"model": "smollm2", "prompt": prompt}))
        .await;
    assert!(tokens.len() >= 2 * BLOCK, "{} tokens", tokens.len());
    let body = json!({"model": "smollm2", "prompt": prompt, "max_tokens": 4});

    // The second server announces the prompt's blocks until the frontend's index holds them.
    let blocks = (tokens.len() / BLOCK) as f64;
    let announce = |sequence| stored(sequence, &tokens);
    announce_until_indexed(
        &frontend,
        &mut [(&mut holder_events, &announce)],
        &["2"],
        blocks,
    )
    .await;
    // Every request for the prompt goes to the server that caches it.
    for _ in 0..6 {
        let (status, answer) = frontend.complete_with(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(completions(&plain), 0, "none to the other server");
    assert_eq!(completions(&holder), 6);

    // The second server's engine stops: its publisher goes, and so do its blocks.
    let errors = holder_events.close().await;
    assert!(errors.is_empty(), "{errors:?}");
    let metrics = frontend
        .wait_for_metrics("not cleared", Duration::from_secs(30), |metrics| {
            counter(metrics, "dynamo_engine_restarts_total", "2", "") == 1.0
                && counter(metrics, "dynamo_router_indexed_blocks", "2", "") == 0.0
        })
        .await;
    assert_eq!(
        counter(&metrics, "dynamo_engine_restarts_total", "1", ""),
        0.0,
        "{metrics}"
    );

    // It comes back on the same port, numbering its messages from the start again: the
    // frontend reconnects and indexes what it announces.
    let mut holder_events = PubSocket::new();
    holder_events.bind(&holder_endpoint).await.expect("bound");
    announce_until_indexed(
        &frontend,
        &mut [(&mut holder_events, &announce)],
        &["2"],
        blocks,
    )
    .await;
}

/// Two PUB sockets on consecutive free loopback ports, as the publishers of a data-parallel
/// vLLM server's ranks 0 and 1 take them, and the first's address.
async fn consecutive_publishers() -> ([PubSocket; 2], String) {
    for _ in 0..50 {
        let (first, endpoint) = publisher().await;
        let port: u16 = endpoint
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port");
        let mut second = PubSocket::new();
        let next = format!("tcp://127.0.0.1:{}", port.saturating_add(1));
        if second.bind(&next).await.is_ok() {
            return ([first, second], endpoint);
        }
    }
    panic!("no two consecutive free ports in 50 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_data_parallel_engine_of_a_vllm_server_is_a_worker() {
    // One vLLM server of two data-parallel engines, whose publishers take the configured port
    // and the next: engine 1 announces the prompt's blocks, and every request for it goes to
    // engine 1, pinned there with its rank.
    let server = vllm_server().await;
    let ([_rank_0, mut rank_1], endpoint) = consecutive_publishers().await;
    let engines = [format!("vllm={},id=5,events={endpoint},dp=2", server.url())];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    let prompt = "The miller's daughter counted the sacks of flour that left the mill each \
                  morning, and wrote the names of the bakers who came for them in a blue book.";
    let tokens = frontend
        .tokenize(&json!({"model": "smollm2", "prompt": prompt}))
        .await;
    let blocks = (tokens.len() / BLOCK) as f64;
    assert!(blocks >= 2.0, "{} tokens", tokens.len());
    let announce = |sequence| stored(sequence, &tokens);
    announce_until_indexed(&frontend, &mut [(&mut rank_1, &announce)], &["5/1"], blocks).await;
    assert_eq!(indexed(&frontend, "5/0").await, 0.0);

    let body = json!({"model": "smollm2", "prompt": prompt, "max_tokens": 4});
    for _ in 0..4 {
        let (status, answer) = frontend.complete_with(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let ranks = server.header_of_each("POST /v1/completions", "x-data-parallel-rank");
    assert_eq!(ranks, vec![Some("1".to_owned()); 4]);
}

/// The frontend serves before an engine's publisher listens (the server may start after it),
/// and follows the publisher once it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_starts_after_the_frontend_is_followed() {
    let server = vllm_server().await;
    // A free port, closed again: nothing listens there when the frontend starts.
    let (socket, endpoint) = publisher().await;
    let errors = socket.close().await;
    assert!(errors.is_empty(), "{errors:?}");
    let engines = [format!("vllm={},id=1,events={endpoint}", server.url())];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    let mut late = PubSocket::new();
    late.bind(&endpoint).await.expect("bound");
    let tokens: Vec<u32> = (1..=2 * BLOCK as u32).collect();
    let announce = |sequence| stored(sequence, &tokens);
    announce_until_indexed(&frontend, &mut [(&mut late, &announce)], &["1"], 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salted_kv_events_draw_only_the_requests_with_that_salt() {
    // Both servers cache the same prompt: one for requests salted `tenant-a`, the other
    // unsalted. Each request goes to the server whose blocks its own salt (or none) names.
    let (unsalted, salted) = (vllm_server().await, vllm_server().await);
    let (mut unsalted_events, unsalted_endpoint) = publisher().await;
    let (mut salted_events, salted_endpoint) = publisher().await;
    let engines = [
        format!("vllm={},id=1,events={unsalted_endpoint}", unsalted.url()),
        format!("vllm={},id=2,events={salted_endpoint}", salted.url()),
    ];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    let prompt = "The keeper of the lighthouse wrote down the tide, the wind and the ships that \
                  passed each day, in a book that his daughter kept after him for forty years.";
    let tokens = frontend
        .tokenize(&json!({"model": "smollm2", "prompt": prompt}))
        .await;
    let blocks = (tokens.len() / BLOCK) as f64;
    assert!(blocks >= 2.0, "{} tokens", tokens.len());

    // Both servers announce the prompt's blocks until the index holds them.
    let unsalted_blocks = |sequence| stored(sequence, &tokens);
    let salted_blocks = |sequence| stored_salted(sequence, &tokens, "tenant-a");
    let announcers: &mut [Announcer<'_>] = &mut [
        (&mut unsalted_events, &unsalted_blocks),
        (&mut salted_events, &salted_blocks),
    ];
    announce_until_indexed(&frontend, announcers, &["1", "2"], blocks).await;
    for salt in [
        json!("tenant-a"),
        json!(null),
        json!("tenant-a"),
        json!(null),
    ] {
        let body =
            json!({"model": "smollm2", "prompt": prompt, "max_tokens": 4, "cache_salt": salt});
        let (status, answer) = frontend.complete_with(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!((completions(&salted), completions(&unsalted)), (2, 2));
    // The salt went on to the server that holds its blocks, and none to the other.
    let salts = |server: &Replay| -> Vec<serde_json::Value> {
        let requests = server.seen.requests.lock().expect("not poisoned");
        requests
            .iter()
            .filter(|(line, _)| line.starts_with("POST /v1/completions"))
            .map(|(_, body)| {
                let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
                body["cache_salt"].clone()
            })
            .collect()
    };
    assert_eq!(salts(&salted), [json!("tenant-a"), json!("tenant-a")]);
    assert_eq!(salts(&unsalted), [json!(null), json!(null)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_and_refused_kv_events_are_counted_on_the_metrics() {
    // A vLLM hybrid model's server: its full-attention group is followed, its sliding-window
    // group's events skipped; a removal of blocks never stored is ignored; a message that is
    // not msgpack is refused. Each shows on /metrics by worker and reason.
    let server = vllm_server().await;
    let (mut events, endpoint) = publisher().await;
    let engines = [format!("vllm={},id=3,events={endpoint}", server.url())];
    let (_process, frontend) = support::engine_frontend(&engines).await;
    let tokens: Vec<u32> = (1..=2 * BLOCK as u32).collect();

    // Announce plain blocks until the index holds them: the subscriber is connected and every
    // message from here on reaches it.
    let announce = |sequence| stored(sequence, &tokens);
    let sequence =
        announce_until_indexed(&frontend, &mut [(&mut events, &announce)], &["3"], 2.0).await;
    const SKIPPED: &str = "dynamo_engine_kv_events_skipped_total";
    const ERRORS: &str = "dynamo_engine_kv_event_errors_total";
    let metrics = frontend.metrics().await;
    let other_groups = r#"reason="other_groups""#;
    let unknown_removed = r#"reason="unknown_removed""#;
    let tokenless = r#"reason="tokenless""#;
    let unknown_parent = r#"reason="unknown_parent""#;
    let misaligned = r#"reason="misaligned""#;
    let unknown_medium = r#"reason="unknown_medium""#;
    let reasons = [
        other_groups,
        unknown_removed,
        tokenless,
        unknown_parent,
        misaligned,
        unknown_medium,
    ];
    let malformed = r#"error="malformed_engine_event""#;
    // Each reason's series is there from the start, at 0.
    for reason in reasons {
        let zero = metrics.lines().any(|line| {
            line.starts_with(&format!("{SKIPPED}{{"))
                && line.contains("worker=\"3/")
                && line.contains(reason)
                && line.ends_with(" 0")
        });
        assert!(zero, "no {reason} series at 0: {metrics}");
    }

    // Another prompt's two blocks, stored by both groups.
    let more: Vec<u32> = (100..100 + 2 * BLOCK as u32).collect();
    let ids = Value::Array(more.iter().map(|&t| Value::from(t)).collect());
    let stored_in = |group: i64, kind: &str| {
        vec![
            ("type", "BlockStored".into()),
            ("block_hashes", Value::Array(vec![5001.into(), 5002.into()])),
            ("parent_block_hash", Value::Nil),
            ("token_ids", ids.clone()),
            ("block_size", Value::from(BLOCK as u64)),
            ("medium", "GPU".into()),
            ("group_idx", Value::from(group)),
            ("kv_cache_spec_kind", kind.into()),
        ]
    };
    let removed_in = |group: i64, hashes: &[u64]| {
        vec![
            ("type", "BlockRemoved".into()),
            (
                "block_hashes",
                Value::Array(hashes.iter().map(|&h| Value::from(h)).collect()),
            ),
            ("medium", "GPU".into()),
            ("group_idx", Value::from(group)),
        ]
    };
    // Two events of the sliding-window group (a store and a removal), skipped.
    events
        .send(message_of(
            sequence + 1,
            vec![
                stored_in(0, "full_attention"),
                stored_in(1, "sliding_window"),
                removed_in(1, &[5001]),
            ],
        ))
        .await
        .expect("published");
    // Three removed blocks never stored, ignored.
    events
        .send(message_of(sequence + 2, vec![removed_in(0, &[1, 2, 3])]))
        .await
        .expect("published");
    // A payload that is not msgpack, refused.
    events
        .send(frames(sequence + 3, vec![0xc1]))
        .await
        .expect("published");
    // Stores the decoder cannot hash, each skipped alone: an offloaded chunk named by a hash
    // never stored with its tokens (vLLM's offloading connector), a block after a parent never
    // stored, and two hashes over three blocks of tokens (vLLM issue #44451).
    let store = |hashes: &[u64], parent: Option<u64>, tokens: &[u32], size: u64, medium: &str| {
        vec![
            ("type", "BlockStored".into()),
            (
                "block_hashes",
                Value::Array(hashes.iter().map(|&h| Value::from(h)).collect()),
            ),
            ("parent_block_hash", parent.map_or(Value::Nil, Value::from)),
            (
                "token_ids",
                Value::Array(tokens.iter().map(|&t| Value::from(t)).collect()),
            ),
            ("block_size", Value::from(size)),
            ("medium", medium.into()),
            ("group_idx", Value::from(0)),
        ]
    };
    let three_blocks: Vec<u32> = (200..200 + 3 * BLOCK as u32).collect();
    events
        .send(message_of(
            sequence + 4,
            vec![
                store(&[7001], None, &[], 0, "CPU"),
                store(
                    &[8001],
                    Some(9999),
                    &three_blocks[..BLOCK],
                    BLOCK as u64,
                    "GPU",
                ),
                store(&[8101, 8102], None, &three_blocks, BLOCK as u64, "GPU"),
            ],
        ))
        .await
        .expect("published");
    // A block hashed with the token after it (vLLM's lookahead hashing), indexed on its own
    // tokens, and two of a medium the decoder does not know (a store and a removal), skipped.
    let mut hashed_ahead = store(&[8201], None, &three_blocks[..BLOCK], BLOCK as u64, "GPU");
    hashed_ahead.push((
        "lookahead_token_ids",
        Value::Array(vec![Value::Array(vec![three_blocks[BLOCK].into()])]),
    ));
    let elsewhere = store(
        &[8301],
        None,
        &three_blocks[..BLOCK],
        BLOCK as u64,
        "NVME_POOL",
    );
    let mut removed_elsewhere = removed_in(0, &[8302]);
    removed_elsewhere[2] = ("medium", "NVME_POOL".into());
    events
        .send(message_of(
            sequence + 5,
            vec![hashed_ahead, elsewhere, removed_elsewhere],
        ))
        .await
        .expect("published");

    let metrics = frontend
        .wait_for_metrics("not counted", Duration::from_secs(30), |metrics| {
            counter(metrics, ERRORS, "3", malformed) >= 1.0
                && counter(metrics, SKIPPED, "3", other_groups) >= 2.0
                && counter(metrics, SKIPPED, "3", unknown_removed) >= 3.0
                && counter(metrics, SKIPPED, "3", misaligned) >= 2.0
                && counter(metrics, SKIPPED, "3", unknown_medium) >= 2.0
                && counter(metrics, "dynamo_router_indexed_blocks", "3", "") >= 5.0
        })
        .await;
    for (reason, count) in [
        (tokenless, 1.0),
        (unknown_parent, 1.0),
        (misaligned, 2.0),
        (unknown_medium, 2.0),
    ] {
        assert_eq!(counter(&metrics, SKIPPED, "3", reason), count, "{metrics}");
    }
    assert_eq!(
        counter(&metrics, SKIPPED, "3", other_groups),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, SKIPPED, "3", unknown_removed),
        3.0,
        "{metrics}"
    );
    assert_eq!(counter(&metrics, ERRORS, "3", malformed), 1.0, "{metrics}");
    // The followed group's blocks, and the block hashed with lookahead, are indexed beside the
    // first prompt's.
    assert_eq!(indexed(&frontend, "3").await, 5.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_trtllm_kv_events_are_counted_on_the_metrics() {
    // A `trtllm-serve` stand-in whose polled answer stores a block under a parent never seen
    // (skipped) and removes two blocks never stored (ignored).
    let server = trtllm::StandIn::start(HashMap::from([
        (
            "/v1/completions".to_owned(),
            trtllm::trtllm_fixture("whole_token_ids.http"),
        ),
        ("/metrics".to_owned(), trtllm::events_answer("[]")),
    ]))
    .await;
    let tokens: Vec<serde_json::Value> = (1..=BLOCK as u32)
        .map(|id| json!({"type": "unique_token", "token_id": id, "token_extra_id": 0}))
        .collect();
    let events = json!([
        {"event_id": 0, "data": {"type": "created", "num_blocks_per_cache_level": [512, 0]},
         "window_size": 4096},
        {"event_id": 1, "data": {"type": "stored", "parent_hash": 777, "blocks": [
            {"type": "stored_block", "block_hash": 9100, "tokens": tokens, "cache_level": 0,
             "priority": 35}]},
         "window_size": 4096},
        {"event_id": 2, "data": {"type": "removed", "block_hashes": [1, 2]}, "window_size": 4096},
    ]);
    server.push_events(trtllm::events_answer(&events.to_string()));
    let engines = [format!("trtllm={},id=4,events=poll:20", server.url())];
    let (_process, frontend) = support::engine_frontend(&engines).await;

    const SKIPPED: &str = "dynamo_engine_kv_events_skipped_total";
    let unknown_parent = r#"reason="unknown_parent""#;
    let unknown_removed = r#"reason="unknown_removed""#;
    let metrics = frontend
        .wait_for_metrics("not counted", Duration::from_secs(30), |metrics| {
            counter(metrics, SKIPPED, "4", unknown_parent) >= 1.0
                && counter(metrics, SKIPPED, "4", unknown_removed) >= 2.0
        })
        .await;
    assert_eq!(
        counter(&metrics, SKIPPED, "4", unknown_parent),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, SKIPPED, "4", unknown_removed),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, SKIPPED, "4", r#"reason="other_groups""#),
        0.0
    );
}
