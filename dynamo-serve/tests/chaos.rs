//! Chaos, shortened for CI: a split deployment (a real `nats-server` and `etcd`, a frontend and
//! three mocker workers) under a steady load of concurrent streamed completions, while workers
//! are killed with SIGKILL and restarted, and `nats-server` and `etcd` are restarted. No request may fail,
//! and every answer must be exactly the one an undisturbed worker gives: no token lost or
//! repeated by a migration.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dynamo_transport::local::{LocalEtcd, LocalNats, free_port};
use serde_json::json;
use support::{Frontend, Process, decisions, read_stream, streamed_completion};

/// Clients sending one streamed completion after another.
const CLIENTS: u32 = 24;
/// Tokens each answer streams.
const MAX_TOKENS: u32 = 48;
/// How long the load runs; the faults come during it.
const LOAD: Duration = Duration::from_secs(24);
/// Workers' etcd lease: a killed worker leaves routing within it.
const LEASE_TTL: &str = "2";

fn worker(id: u64, etcd: &str, nats: &str) -> Process {
    let id = id.to_string();
    Process::start(&[
        "worker",
        "--engine",
        "mocker",
        "--id",
        &id,
        "--etcd",
        etcd,
        "--nats",
        nats,
        "--lease-ttl",
        LEASE_TTL,
    ])
}

/// Client `client`'s prompt: one token repeated, so that the mocker's echo is the same however
/// a migration cuts the stream.
fn prompt(client: u32) -> Vec<u32> {
    vec![1_000 + client; 32]
}

/// One streamed completion: its text, or why it failed.
async fn streamed(frontend: &Frontend, client: u32) -> Result<String, String> {
    let body = json!({
        "model": "smollm2", "prompt": prompt(client), "max_tokens": MAX_TOKENS,
        "stream": true, "stream_options": { "include_usage": true },
    });
    let response = frontend.post("/v1/completions", &body).await;
    let status = response.status().as_u16();
    let events = read_stream(response.into_body(), Duration::from_secs(60)).await;
    if status != 200 {
        return Err(format!("status {status}: {events}"));
    }
    let (text, usage, errors, done) = streamed_completion(&events);
    if !done || errors > 0 || usage["completion_tokens"] != MAX_TOKENS {
        return Err(format!("a broken stream: {events}"));
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_restarted_nats_and_etcd_lose_no_request_and_no_token() {
    let mut nats = LocalNats::start().expect("nats-server starts");
    let nats_port = nats.port();
    let mut etcd = LocalEtcd::start().expect("etcd starts");
    let (etcd_url, nats_url) = (etcd.url(), nats.url());
    let mut workers: BTreeMap<u64, Process> = (1..=3)
        .map(|id| (id, worker(id, &etcd_url, &nats_url)))
        .collect();
    let port = free_port().expect("a free port");
    let frontend_process = Process::start(&[
        "frontend",
        "--port",
        &port.to_string(),
        "--etcd",
        &etcd_url,
        "--nats",
        &nats_url,
    ]);
    for joined in ["worker 1/0 at", "worker 2/0 at", "worker 3/0 at"] {
        frontend_process
            .wait_for(joined, Duration::from_secs(60))
            .await;
    }
    let frontend = Arc::new(Frontend::new(port));
    frontend.wait_ready().await;

    // What an undisturbed deployment answers to each client.
    let mut expected = BTreeMap::new();
    for client in 0..CLIENTS {
        expected.insert(
            client,
            streamed(&frontend, client).await.expect("an answer"),
        );
    }
    let expected = Arc::new(expected);

    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (frontend, expected, running) = (
                Arc::clone(&frontend),
                Arc::clone(&expected),
                Arc::clone(&running),
            );
            tokio::spawn(async move {
                let (mut answered, mut failures) = (0_u32, Vec::new());
                while running.load(Ordering::Relaxed) {
                    match streamed(&frontend, client).await {
                        Ok(text) if text == expected[&client] => answered += 1,
                        Ok(text) => failures.push(format!("client {client}: wrong text {text:?}")),
                        Err(why) => failures.push(format!("client {client}: {why}")),
                    }
                }
                (answered, failures)
            })
        })
        .collect();

    // The faults, spread over the load.
    let started = Instant::now();
    let at =
        |seconds: u64| tokio::time::sleep_until((started + Duration::from_secs(seconds)).into());
    at(3).await;
    if let Some(mut killed) = workers.remove(&1) {
        killed.kill();
    }
    at(6).await;
    workers.insert(1, worker(1, &etcd_url, &nats_url));
    at(9).await;
    if let Some(mut killed) = workers.remove(&2) {
        killed.kill();
    }
    at(11).await;
    nats.stop();
    let _restarted = LocalNats::start_on(nats_port).expect("nats-server restarts");
    at(13).await;
    workers.insert(2, worker(2, &etcd_url, &nats_url));
    at(17).await;
    etcd.restart().expect("etcd restarts");
    tokio::time::sleep_until((started + LOAD).into()).await;
    running.store(false, Ordering::Relaxed);

    let (mut answered, mut failures) = (0, Vec::new());
    for client in clients {
        let (client_answered, client_failures) = client.await.expect("a client");
        answered += client_answered;
        failures.extend(client_failures);
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(answered >= CLIENTS * 4, "only {answered} answers");
    let metrics = frontend.metrics().await;
    let migrations: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("dynamo_router_migrations_total"))
        .collect();
    eprintln!("{answered} answers, none failed; {migrations:?}");

    // The restarted workers are back in routing: each takes requests again. Fresh prompts,
    // eight at once, so that load rather than cached blocks decides.
    let back = Instant::now();
    let mut fresh = 100;
    loop {
        let metrics = frontend.metrics().await;
        let before: Vec<u64> = (1..=2).map(|id| decisions(&metrics, id)).collect();
        let batch: Vec<_> = (fresh..fresh + 8)
            .map(|client| {
                let frontend = Arc::clone(&frontend);
                tokio::spawn(async move { streamed(&frontend, client).await })
            })
            .collect();
        fresh += 8;
        for answer in batch {
            answer.await.expect("a client").expect("an answer");
        }
        let metrics = frontend.metrics().await;
        if (1..=2).all(|id| decisions(&metrics, id) > before[id as usize - 1]) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "a restarted worker takes no request"
        );
    }
    workers.clear();
}
