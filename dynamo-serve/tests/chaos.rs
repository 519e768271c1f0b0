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

use dynamo_core::{KvEvent, KvEventData, ResyncRequest, WorkerId};
use dynamo_transport::events::{EventPlane, NatsEvents};
use dynamo_transport::local::{LocalEtcd, LocalNats, free_port};
use futures::StreamExt;
use serde_json::json;
use support::{Frontend, Process, decisions, read_stream, registry_worker, streamed_completion};

/// Clients sending one streamed completion after another (`DYNAMO_CHAOS_CLIENTS` for a longer
/// run).
const CLIENTS: u32 = 24;
/// Tokens each answer streams.
const MAX_TOKENS: u32 = 48;
/// How long the load runs, in seconds; the faults come during it (`DYNAMO_CHAOS_SECONDS`).
const LOAD_SECONDS: u64 = 24;

/// `variable`'s number, or `default`.
fn setting<T: std::str::FromStr>(variable: &str, default: T) -> T {
    std::env::var(variable)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
/// Workers' etcd lease, in seconds: a restarted worker is back in routing within it.
const LEASE_TTL: u64 = 2;

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
        &LEASE_TTL.to_string(),
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
    let client_count = setting("DYNAMO_CHAOS_CLIENTS", CLIENTS);
    let load = setting("DYNAMO_CHAOS_SECONDS", LOAD_SECONDS);
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
    let baseline: Vec<_> = (0..client_count)
        .map(|client| {
            let frontend = Arc::clone(&frontend);
            tokio::spawn(async move { (client, streamed(&frontend, client).await) })
        })
        .collect();
    let mut expected = BTreeMap::new();
    for answer in baseline {
        let (client, answer) = answer.await.expect("a client");
        expected.insert(client, answer.expect("an answer"));
    }
    let expected = Arc::new(expected);

    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..client_count)
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

    // The faults, spread over the load: their times are for CI's 24 s, stretched to `load`.
    let started = Instant::now();
    let at = |seconds: u64| {
        let after = Duration::from_secs(seconds * load / LOAD_SECONDS);
        tokio::time::sleep_until((started + after).into())
    };
    // A killed worker leaves routing when its lease ends; a restarted one is back in routing
    // (joined) within its lease TTL of starting.
    let ttl = Duration::from_secs(LEASE_TTL);
    let (mut left_after, mut back_after) = (Vec::new(), Vec::new());
    at(3).await;
    if let Some(mut killed) = workers.remove(&1) {
        killed.kill();
    }
    left_after.push(frontend_process.wait_for("worker 1/0 left", 2 * ttl).await);
    at(6).await;
    workers.insert(1, worker(1, &etcd_url, &nats_url));
    back_after.push(rejoined(&frontend_process, 1, ttl).await);
    at(9).await;
    if let Some(mut killed) = workers.remove(&2) {
        killed.kill();
    }
    left_after.push(frontend_process.wait_for("worker 2/0 left", 2 * ttl).await);
    at(11).await;
    nats.stop();
    let _restarted = LocalNats::start_on(nats_port).expect("nats-server restarts");
    at(13).await;
    workers.insert(2, worker(2, &etcd_url, &nats_url));
    back_after.push(rejoined(&frontend_process, 2, ttl).await);
    at(17).await;
    etcd.restart().expect("etcd restarts");
    at(LOAD_SECONDS).await;
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
    assert!(answered >= client_count * 4, "only {answered} answers");
    let metrics = frontend.metrics().await;
    let migrations: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("dynamo_router_migrations_total"))
        .collect();
    eprintln!(
        "{answered} answers, none failed; {migrations:?}; killed workers left routing after \
         {left_after:?}, restarted ones were back after {back_after:?}"
    );

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

    // The router's index agrees with the workers' own blocks: first the frontend's view once
    // it has settled, then each worker's own, a snapshot asked for over NATS.
    let indexed = settled_index_sizes(&frontend, &[1, 2, 3]).await;
    let own = own_blocks(&nats_url, &[1, 2, 3]).await;
    eprintln!("blocks per worker: indexed {indexed:?}, the workers' own {own:?}");
    assert_eq!(
        indexed, own,
        "the index agrees with the workers after the faults"
    );
    assert!(own.values().all(|blocks| *blocks > 0), "{own:?}");
    workers.clear();
}

/// Wait until worker `id` has joined the frontend twice (started, then restarted), within
/// `ttl`; how long it took.
async fn rejoined(frontend: &Process, id: u64, ttl: Duration) -> Duration {
    let joined = format!("worker {id}/0 at");
    frontend.wait_for_count(&[&joined, " joined"], 2, ttl).await
}

/// The frontend's `dynamo_router_indexed_blocks` of `workers` once it has not changed for a
/// second (four of the frontend's updates).
async fn settled_index_sizes(frontend: &Frontend, workers: &[u64]) -> BTreeMap<u64, u64> {
    let started = Instant::now();
    let (mut last, mut since) = (BTreeMap::new(), Instant::now());
    loop {
        let metrics = frontend.metrics().await;
        let sizes: BTreeMap<u64, u64> = workers
            .iter()
            .map(|&id| {
                let key = format!("dynamo_router_indexed_blocks{{worker=\"{id}/0\"}} ");
                let value = metrics
                    .lines()
                    .find_map(|line| line.strip_prefix(&key))
                    .and_then(|value| value.trim().parse::<f64>().ok())
                    .unwrap_or(-1.0);
                (id, value as u64)
            })
            .collect();
        if sizes != last {
            (last, since) = (sizes, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(1) {
            return last;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the index did not settle: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The blocks each of `workers` holds by its own account: the snapshot it sends when asked for
/// a resync.
async fn own_blocks(nats_url: &str, workers: &[u64]) -> BTreeMap<u64, u64> {
    let plane = NatsEvents::connect(nats_url, "dynamo")
        .await
        .expect("NATS reachable");
    let mut events = plane.subscribe::<KvEvent>().await.expect("subscribed");
    for &id in workers {
        let request = ResyncRequest {
            worker: WorkerId::new(id),
            expected: 0,
            received: 0,
        };
        plane.publish(&request).await.expect("published");
    }
    let mut own = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while own.len() < workers.len() {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("every worker answers with a snapshot")
            .expect("the subscription is open")
            .expect("an event");
        if let KvEventData::Snapshot { blocks, .. } = &event.data {
            own.insert(event.worker.worker, blocks.len() as u64);
        }
    }
    own
}

/// A directory-registry deployment of `workers` mocker workers and a frontend started with
/// `frontend_flags`, once every worker has joined.
async fn directory_deployment(
    registry: &str,
    workers: u64,
    frontend_flags: &[&str],
) -> (Vec<Process>, Process, Arc<Frontend>) {
    let workers: Vec<Process> = (1..=workers)
        .map(|id| registry_worker("mocker", id, registry, &[]))
        .collect();
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["frontend", "--port", &port, "--registry", registry];
    args.extend(["--router", "approx-kv"]);
    args.extend_from_slice(frontend_flags);
    let process = Process::start(&args);
    for id in 1..=workers.len() {
        let joined = format!("worker {id}/0 at");
        process.wait_for(&joined, Duration::from_secs(60)).await;
    }
    let frontend = Arc::new(Frontend::new(port.parse().expect("a port")));
    frontend.wait_ready().await;
    (workers, process, frontend)
}

/// Send `signal` (`STOP`, `CONT`) to `process`.
fn signal(process: &Process, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &process.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_hangs_with_its_socket_open_loses_no_request() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-hang-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    // A worker that sends no token for 2 s has its requests continued elsewhere.
    let (workers, _process, frontend) =
        directory_deployment(&registry, 2, &["--stall-timeout", "2"]).await;
    let expected: Vec<String> = {
        let mut answers = Vec::new();
        for client in 0..8 {
            answers.push(streamed(&frontend, client).await.expect("an answer"));
        }
        answers
    };
    // Worker 1 stops mid-load (SIGSTOP): its sockets stay open, it answers nothing.
    let routed_before = decisions(&frontend.metrics().await, 1);
    let load: Vec<_> = (0..8)
        .map(|client| {
            let frontend = Arc::clone(&frontend);
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..6 {
                    answers.push(streamed(&frontend, client).await);
                }
                answers
            })
        })
        .collect();
    // Once the load reaches worker 1.
    let waiting = Instant::now();
    while decisions(&frontend.metrics().await, 1) == routed_before {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "no request reached worker 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&workers[0], "STOP");
    let stopped = Instant::now();
    for (client, answers) in load.into_iter().enumerate() {
        for answer in answers.await.expect("a client") {
            assert_eq!(answer.as_deref(), Ok(expected[client].as_str()));
        }
    }
    let metrics = frontend.metrics().await;
    assert!(
        metrics.contains("dynamo_router_ejections_total{reason=\"stalled\"}"),
        "{metrics}"
    );
    eprintln!(
        "all answers whole {:?} after the worker hung",
        stopped.elapsed()
    );
    signal(&workers[0], "CONT");
}

/// The resident memory of `process`, in kB (`VmRSS` of `/proc/PID/status`).
fn resident_kb(process: &Process) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", process.child.id())).expect("a status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_more_load_than_capacity_is_refused_with_retry_after_and_recovers() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-overload-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let capacity = 16;
    let flags = ["--max-in-flight", "16"];
    let (_workers, process, frontend) = directory_deployment(&registry, 2, &flags).await;
    let before = resident_kb(&process);

    // Ten times as many clients as requests the frontend serves at once, each sending one
    // request after another for 10 s.
    let started = Instant::now();
    let clients: Vec<_> = (0..capacity * 10)
        .map(|client| {
            let frontend = Arc::clone(&frontend);
            tokio::spawn(async move {
                let (mut served, mut refused, mut other) = (0_u32, 0_u32, Vec::new());
                while started.elapsed() < Duration::from_secs(10) {
                    let body = json!({
                        "model": "smollm2", "prompt": prompt(client), "max_tokens": MAX_TOKENS,
                        "stream": true,
                    });
                    let response = frontend.post("/v1/completions", &body).await;
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get("retry-after").is_some();
                    let events = read_stream(response.into_body(), Duration::from_secs(60)).await;
                    match status {
                        200 if events.ends_with("data: [DONE]\n\n") => served += 1,
                        503 if retry_after => refused += 1,
                        _ => other.push(format!("{status} {events}")),
                    }
                }
                (served, refused, other)
            })
        })
        .collect();
    // The frontend's memory, sampled every 100 ms while the load runs.
    let mut peak = before;
    let mut samples = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < Duration::from_secs(10) {
        samples.tick().await;
        peak = peak.max(resident_kb(&process));
    }
    let (mut served, mut refused, mut other) = (0, 0, Vec::new());
    for client in clients {
        let (client_served, client_refused, client_other) = client.await.expect("a client");
        served += client_served;
        refused += client_refused;
        other.extend(client_other);
    }
    assert!(other.is_empty(), "neither served nor refused: {other:?}");
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
    // Memory stays bounded: what waits is bounded by --max-in-flight.
    let after = resident_kb(&process);
    assert!(
        after < before + 256 * 1024,
        "{before} kB before, {after} kB after"
    );

    // Recovery: the next request is served at once.
    let answer = streamed(&frontend, 0).await;
    assert!(answer.is_ok(), "{answer:?}");
    eprintln!(
        "overload: {served} served, {refused} refused with Retry-After; resident {before} kB \
         before, {peak} kB at the peak (sampled every 100 ms), {after} kB after"
    );
}
