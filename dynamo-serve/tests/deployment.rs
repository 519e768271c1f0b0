//! The three-process deployment, as a user runs it: `nats-server` and `etcd` (Debian packages
//! `nats-server` and `etcd-server`), two `dynamo-serve worker` processes running the mocker, and
//! a `dynamo-serve frontend`, all on free loopback ports, driven over HTTP.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dynamo_candle::LlamaConfig;
use dynamo_core::{
    BlockSize, Disaggregation, EngineExt, GenerateRequest, KvEvent, KvEventData, KvHandoff,
    SequenceHash, WorkerId,
};
use dynamo_kvbm::{Error as KvError, KvFetch, TcpFetch, TcpFetchConfig};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use dynamo_transport::events::{EventPlane, NatsEvents, Subscription};
use dynamo_transport::local::{LocalAuthority, LocalEtcd, LocalNats, free_port};
use dynamo_transport::tcp::RemoteEngine;
use support::{
    Frontend, GREEDY_PROMPTS, Process, aggregated_reference, cached_tokens, decisions,
    directory_frontend, eventually, first_events, greedy_texts, issue, joined_frontend,
    long_prompt, placed, read_stream, registry_worker, streamed_completion,
};

/// The etcd lease TTL the workers register with.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// The NATS subject prefix of the deployment: `dynamo-serve`'s default `--namespace`.
const NAMESPACE: &str = "dynamo";
/// The cached prompt tokens that show a repeat landed where its first request left its blocks.
const CACHED_ENOUGH: u64 = 128;

fn worker(id: u64, etcd: &LocalEtcd, nats: &LocalNats) -> Process {
    let (id, etcd, nats, ttl) = (
        id.to_string(),
        etcd.url(),
        nats.url(),
        LEASE_TTL.as_secs().to_string(),
    );
    Process::start(&[
        "worker",
        "--engine",
        "mocker",
        "--id",
        &id,
        "--etcd",
        &etcd,
        "--nats",
        &nats,
        "--lease-ttl",
        &ttl,
    ])
}

/// Wait until NATS has delivered `Stored` events for at least [`CACHED_ENOUGH`] tokens of one
/// worker to `events`, a subscriber of the deployment's KV events like the frontend's router.
///
/// The frontend's router gets each message at the same time; that it has applied it to its
/// index cannot be seen from outside, but it takes far less than the next HTTP request does.
async fn wait_for_stored(events: &mut Subscription<KvEvent>) {
    let mut stored: Vec<(WorkerId, u64)> = Vec::new();
    let within = Duration::from_secs(10);
    while !stored.iter().any(|&(_, tokens)| tokens >= CACHED_ENOUGH) {
        let event = tokio::time::timeout(within, events.next())
            .await
            .unwrap_or_else(|_| panic!("no KV events for the prompt within {within:?}: {stored:?}"))
            .expect("the subscription is open")
            .expect("a well-formed event");
        if let KvEventData::Stored {
            block_size, blocks, ..
        } = &event.data
        {
            let tokens = u64::from(block_size.get()) * blocks.len() as u64;
            match stored
                .iter_mut()
                .find(|(worker, _)| *worker == event.worker)
            {
                Some((_, total)) => *total += tokens,
                None => stored.push((event.worker, tokens)),
            }
        }
    }
}

/// Send a long prompt twice; whether the second landed where the first left its blocks.
async fn repeat_lands_on_cache(frontend: &Frontend, nats: &NatsEvents, tag: &str) -> bool {
    let prompt = long_prompt(tag);
    // Subscribed before the first request, so none of its events is missed.
    let mut events = nats.subscribe::<KvEvent>().await.expect("subscribed");
    let (status, _) = frontend.complete(&prompt, 2).await;
    assert_eq!(status, 200);
    // The first request's KV events travel worker → NATS → frontend.
    wait_for_stored(&mut events).await;
    let (status, body) = frontend.complete(&prompt, 2).await;
    assert_eq!(status, 200);
    cached_tokens(&body) >= CACHED_ENOUGH
}

/// Eight repeats of eight land on the cache: with two workers and no events, the chance is
/// 1/256. The KV events are watched on the NATS server at `nats_url`.
async fn kv_events_route_repeats(frontend: &Frontend, nats_url: &str, round: &str) {
    let nats = NatsEvents::connect(nats_url, NAMESPACE)
        .await
        .expect("connected to NATS");
    for attempt in 0..8 {
        assert!(
            repeat_lands_on_cache(frontend, &nats, &format!("{round}{attempt}x")).await,
            "repeat {attempt} of round {round} missed the cache"
        );
    }
}

/// Open a streamed completion and return its body once the first chunk has come.
async fn open_stream(frontend: &Frontend, prompt: &str) -> Incoming {
    let body = json!({ "model": "smollm2", "prompt": prompt, "max_tokens": 4000, "stream": true });
    let response = frontend.post("/v1/completions", &body).await;
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first chunk")
        .expect("readable");
    assert!(
        first
            .data_ref()
            .is_some_and(|data| data.starts_with(b"data:"))
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_routes_to_two_worker_processes_through_nats_and_etcd() {
    let mut nats = LocalNats::start().expect("nats-server starts");
    let nats_port = nats.port();
    let nats_url = nats.url();
    let etcd = LocalEtcd::start().expect("etcd starts");
    let mut first = worker(1, &etcd, &nats);
    let second = worker(2, &etcd, &nats);
    let port = free_port().expect("a free port");
    let frontend_process = Process::start(&[
        "frontend",
        "--port",
        &port.to_string(),
        "--etcd",
        &etcd.url(),
        "--nats",
        &nats.url(),
    ]);
    let frontend = Frontend::new(port);
    frontend.wait_ready().await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;

    // Requests succeed through the frontend.
    let (status, body) = frontend.complete("Once upon a time", 8).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8);

    // KV events reach the router: a repeated long prefix lands on the worker that cached it.
    kv_events_route_repeats(&frontend, &nats_url, "before").await;

    // After NATS restarts, the router receives new events again.
    nats.stop();
    let _nats = LocalNats::start_on(nats_port).expect("nats-server restarts");
    for process in [&frontend_process, &first, &second] {
        process
            .wait_for("NATS connection restored", Duration::from_secs(30))
            .await;
    }
    kv_events_route_repeats(&frontend, &nats_url, "after").await;

    // A killed worker's in-flight requests continue on the other worker (request migration),
    // without an error; the others carry on. Two long streams, the second booked while the
    // first runs, go to different workers.
    let streams = [
        open_stream(&frontend, "the first long story").await,
        open_stream(&frontend, "the second long story").await,
    ];
    first.kill();
    let killed = Instant::now();
    let texts = futures::future::join_all(
        streams.map(|stream| read_stream(stream, Duration::from_secs(3))),
    )
    .await;
    assert!(
        texts.iter().all(|text| !text.contains("\"error\"")),
        "no stream fails: {texts:?}"
    );

    // It leaves routing within the lease TTL, and requests keep succeeding meanwhile.
    let left = frontend_process
        .wait_for("worker 1/0 left", LEASE_TTL * 3)
        .await;
    assert!(
        killed.elapsed() <= LEASE_TTL + Duration::from_secs(3),
        "left after {left:?}"
    );
    for n in 0..6 {
        let (status, body) = frontend.complete(&format!("after the kill {n}"), 2).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_registry_joins_workers_and_a_stopped_worker_leaves() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-registry-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let mut workers: Vec<Process> = (1..=2)
        .map(|id| registry_worker("echo", id, &registry, &[]))
        .collect();
    let (frontend_process, frontend) = directory_frontend(&registry).await;
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;
    for n in 0..4 {
        let (status, body) = frontend.complete(&format!("hello {n}"), 3).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 3);
    }

    // SIGTERM: the worker removes its record and leaves.
    let pid = workers[0].child.id().to_string();
    let stopped = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    frontend_process
        .wait_for("worker 1/0 left", Duration::from_secs(10))
        .await;
    let (status, _) = frontend.complete("still here", 2).await;
    assert_eq!(status, 200);
    workers.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_the_moment_it_is_listed_removes_its_record() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-registry-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let args = [
        "worker",
        "--engine",
        "echo",
        "--id",
        "1",
        "--registry",
        &registry,
    ];
    let mut worker = Command::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dynamo-serve runs");
    let stdout = worker.stdout.take().expect("piped");
    // Its welcome line comes right after its record is written: a scaler counts it ready then,
    // and may stop it at once.
    let welcome = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("registered in"))
    });
    let welcomed = tokio::time::timeout(Duration::from_secs(60), welcome).await;
    if !matches!(welcomed, Ok(Ok(true))) {
        let _ = worker.kill();
        panic!("the worker never said it registered");
    }
    let pid = worker.id().to_string();
    let signal = |name: &str| Command::new("kill").args([name, &pid]).status();
    assert!(signal("-TERM").is_ok_and(|sent| sent.success()));
    let exit = tokio::task::spawn_blocking(move || worker.wait());
    let Ok(Ok(Ok(status))) = tokio::time::timeout(Duration::from_secs(30), exit).await else {
        let _ = signal("-KILL");
        panic!("the worker did not exit within 30 s of SIGTERM");
    };
    assert!(status.success(), "{status}");
    assert_eq!(support::registered(directory), 0, "the record is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_prefill_and_decode_workers_over_mutual_tls_answer_as_one_aggregated_process() {
    let (_reference, reference) = aggregated_reference();

    let temporary = tempfile::Builder::new()
        .prefix("dynamo-split-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.join("registry").display().to_string();
    // Every process of the deployment has a certificate from one authority: the request plane
    // and the KV block transfers run over mutual TLS.
    let authority = LocalAuthority::new().expect("an authority");
    let ca = directory.join("ca.pem");
    std::fs::write(&ca, authority.pem()).expect("written");
    let ca = ca.display().to_string();
    let plane = |name: &str, names: &[&str]| {
        let [cert, key] = issue(&authority, directory, name, names);
        [
            "--plane-tls-ca",
            &ca,
            "--plane-tls-cert",
            &cert,
            "--plane-tls-key",
            &key,
        ]
        .map(str::to_owned)
    };
    let kv_port = free_port().expect("a free port").to_string();
    let role = |id: &str, role: &str, kv_port: &str| {
        let plane = plane(role, &["127.0.0.1"]);
        let mut args = vec![
            "worker",
            "--role",
            role,
            "--id",
            id,
            "--registry",
            &registry,
        ];
        args.extend(["--kv-port", kv_port, "--plane-tls-mutual"]);
        args.extend(plane.iter().map(String::as_str));
        Process::start(&args)
    };
    let prefill = role("1", "prefill", &kv_port);
    let decode = role("2", "decode", "0");
    let frontend_plane = plane("frontend", &["frontend"]);
    let frontend_flags: Vec<&str> = frontend_plane.iter().map(String::as_str).collect();
    let (_frontend, frontend) = joined_frontend(&registry, &frontend_flags).await;
    reference.wait_ready().await;

    let split = greedy_texts(&frontend).await;
    assert_eq!(split, greedy_texts(&reference).await);
    let metrics = frontend.metrics().await;
    assert_eq!(
        placed(&metrics, "remote"),
        GREEDY_PROMPTS.len() as u64,
        "{metrics}"
    );
    assert_eq!(placed(&metrics, "fallback"), 0, "{metrics}");
    assert!(
        !decode.logged("could not be pulled"),
        "every hand-over was pulled over TCP"
    );
    assert!(prefill.logged(&format!("KV blocks on 127.0.0.1:{kv_port} over TLS")));

    // A second frontend over the same workers with a flexible prefill pool: the prefill
    // worker, idle when each request comes, serves it whole, with the same answer.
    let mut flexible_flags = frontend_flags.clone();
    flexible_flags.extend(["--placement", "flexible"]);
    let (_flexible, flexible) = joined_frontend(&registry, &flexible_flags).await;
    assert_eq!(greedy_texts(&flexible).await, split);
    let metrics = flexible.metrics().await;
    let whole = placed(&metrics, "prefill_worker");
    assert_eq!(whole, GREEDY_PROMPTS.len() as u64, "{metrics}");
    assert_eq!(placed(&metrics, "remote") + placed(&metrics, "local"), 0);
    // And a third placed by the router's cost: each request whole on one worker or the other.
    let mut router_cost_flags = frontend_flags.clone();
    router_cost_flags.extend(["--placement", "router-cost"]);
    let (_router_cost, router_cost) = joined_frontend(&registry, &router_cost_flags).await;
    assert_eq!(greedy_texts(&router_cost).await, split);
    let metrics = router_cost.metrics().await;
    let served = placed(&metrics, "prefill_worker") + placed(&metrics, "local");
    assert_eq!(served, GREEDY_PROMPTS.len() as u64, "{metrics}");
    assert_eq!(placed(&metrics, "remote"), 0, "{metrics}");

    // A puller without the deployment's TLS gets nothing from the block server.
    let handoff = KvHandoff {
        source: WorkerId::new(1),
        address: Some(format!("127.0.0.1:{kv_port}")),
        transfer: 0,
        blocks: vec![SequenceHash(1)],
    };
    let plain = TcpFetch::new(TcpFetchConfig::new(4096, 4)).expect("a client");
    let refused = plain.fetch(&handoff).await;
    assert!(
        matches!(refused, Err(KvError::Transfer { .. })),
        "{refused:?}"
    );
}

/// Mocker workers 1 and 2 with `flags`, registered in `registry`, and a frontend over them once
/// both have joined.
async fn mocker_deployment(registry: &str, flags: &[&str]) -> (Vec<Process>, Process, Frontend) {
    let workers = (1..=2)
        .map(|id| registry_worker("mocker", id, registry, flags))
        .collect();
    let (frontend_process, frontend) = joined_frontend(registry, &[]).await;
    (workers, frontend_process, frontend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_worker_is_killed_mid_stream_continues_on_the_other_worker() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-migration-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let (mut workers, _frontend_process, frontend) = mocker_deployment(&registry, &[]).await;
    // The mocker echoes its prompt: one repeated token makes the answer the same however the
    // stream is cut, so the text checks that no token is lost or repeated.
    let prompt = vec![314_u32; 64];
    let max_tokens = 400;
    let body = json!({
        "model": "smollm2", "prompt": prompt, "max_tokens": max_tokens,
        "stream": true, "stream_options": { "include_usage": true },
    });
    let response = frontend.post("/v1/completions", &body).await;
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.into_body();
    let mut events = String::new();
    while events.matches("data: ").count() < 8 {
        let frame = stream.frame().await.expect("a chunk").expect("readable");
        if let Some(data) = frame.data_ref() {
            events.push_str(&String::from_utf8_lossy(data));
        }
    }
    // The worker the router chose serves the stream: kill it (SIGKILL).
    let metrics = frontend.metrics().await;
    let serving = (1..=2)
        .find(|id| {
            metrics.lines().any(|line| {
                line.starts_with("dynamo_router_decisions_total{")
                    && line.contains(&format!("worker=\"{id}/0\""))
            })
        })
        .expect("a routing decision");
    workers[serving - 1].kill();
    events.push_str(&read_stream(stream, Duration::from_secs(120)).await);
    let (text, usage, errors, done) = streamed_completion(&events);
    assert!(done && errors == 0, "the stream ends well:\n{events}");
    assert_eq!(usage["completion_tokens"], max_tokens, "{usage}");
    assert_eq!(usage["prompt_tokens"], 64, "{usage}");
    let metrics = frontend.metrics().await;
    // A retry may find the killed worker still in routing, and try again once discovery has
    // removed it.
    assert!(
        metrics.contains("dynamo_router_migrations_total{outcome=\"migrated\"}")
            && !metrics.contains("outcome=\"exhausted\""),
        "{metrics}"
    );
    // The same request on the surviving worker, unbroken.
    let whole = json!({ "model": "smollm2", "prompt": prompt, "max_tokens": max_tokens });
    let (status, answer) = frontend.complete_with(&whole).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(text, answer["choices"][0]["text"].as_str().expect("a text"));
    workers.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_by_sigterm_leaves_routing_and_finishes_its_stream() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-drain-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let flags = ["--speedup", "0.2", "--drain-timeout", "60"];
    let (mut workers, frontend_process, frontend) = mocker_deployment(&registry, &flags).await;
    let prompt = vec![314_u32; 64];
    let max_tokens = 400;
    let body = json!({
        "model": "smollm2", "prompt": prompt, "max_tokens": max_tokens,
        "stream": true, "stream_options": { "include_usage": true },
    });
    let (stream, mut events) = first_events(&frontend, &body).await;
    let metrics = frontend.metrics().await;
    let serving = (1..=2)
        .find(|&id| decisions(&metrics, id) > 0)
        .expect("a routing decision");
    let other = 3 - serving;

    // SIGTERM: the worker leaves discovery first, then drains its stream.
    let started = Instant::now();
    let draining = &workers[serving as usize - 1];
    draining.terminate();
    draining
        .wait_for("draining 1 streams", Duration::from_secs(10))
        .await;
    frontend_process
        .wait_for(&format!("worker {serving}/0 left"), Duration::from_secs(10))
        .await;
    // New requests go to the other worker meanwhile.
    let before = frontend.metrics().await;
    for n in 0..4 {
        let (status, body) = frontend.complete(&format!("during the drain {n}"), 2).await;
        assert_eq!(status, 200, "{body}");
    }
    let after = frontend.metrics().await;
    assert_eq!(decisions(&after, other), decisions(&before, other) + 4);
    assert_eq!(decisions(&after, serving), decisions(&before, serving));
    assert!(
        !draining.logged("drained"),
        "the stream outlasts the requests sent during the drain ({:?})",
        started.elapsed()
    );

    // The stream ends on the draining worker, whole and not migrated; then the worker exits 0.
    events.push_str(&read_stream(stream, Duration::from_secs(120)).await);
    let (text, usage, errors, done) = streamed_completion(&events);
    assert!(done && errors == 0, "the stream ends well:\n{events}");
    assert_eq!(usage["completion_tokens"], max_tokens, "{usage}");
    assert!(!text.is_empty());
    let metrics = frontend.metrics().await;
    assert!(
        !metrics.contains("dynamo_router_migrations_total"),
        "{metrics}"
    );
    let status = workers[serving as usize - 1]
        .wait_exit(Duration::from_secs(30))
        .await;
    assert!(status.success(), "{status:?}");
    assert!(workers[serving as usize - 1].logged("drained"));

    // SIGTERM on the frontend: its open stream finishes, then it exits 0.
    let mut frontend_process = frontend_process;
    let (stream, mut events) = first_events(&frontend, &body).await;
    frontend_process.terminate();
    frontend_process
        .wait_for("stopping: no new connections", Duration::from_secs(10))
        .await;
    events.push_str(&read_stream(stream, Duration::from_secs(120)).await);
    let (_, usage, errors, done) = streamed_completion(&events);
    assert!(done && errors == 0, "the stream ends well:\n{events}");
    assert_eq!(usage["completion_tokens"], max_tokens, "{usage}");
    let status = frontend_process.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success() && frontend_process.logged("drained"));
    workers.clear();
}

/// A prefill worker stopped right after it handed a prompt over: it keeps serving the blocks
/// until the decode worker has pulled and released them, then exits. The test plays the
/// frontend and the decode worker: it sends the prefill request over the request plane and
/// pulls the hand-over over TCP after the SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_prefill_worker_serves_its_hand_overs_until_they_are_pulled() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-prefill-drain-")
        .tempdir()
        .expect("a temporary directory");
    let registry = temporary.path().display().to_string();
    let port = free_port().expect("a free port");
    let flags = [
        "--role",
        "prefill",
        "--block-size",
        "16",
        "--drain-timeout",
        "60",
    ];
    let port_flag = ["--port".to_owned(), port.to_string()];
    let mut worker = registry_worker(
        "candle",
        1,
        &registry,
        &[&flags[..], &port_flag.each_ref().map(String::as_str)].concat(),
    );
    eventually(
        "the worker is listed",
        Duration::from_secs(300),
        async || support::registered(temporary.path()) == 1,
    )
    .await;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut plane = RemoteEngine::connect(address).await.expect("connected");
    let prompt: Vec<u32> = (0..40).map(|i| 1000 + 37 * i).collect();
    let mut request = GenerateRequest::new("r1", "smollm2", prompt).with_max_tokens(1);
    request.disaggregation = Disaggregation::Prefill;
    let mut stream = plane.generate(request).await.expect("prefilling");
    let mut handoff = None;
    while let Some(chunk) = stream.next().await {
        handoff = chunk.expect("a chunk").kv_handoff.or(handoff);
    }
    let handoff = handoff.expect("a hand-over in the last chunk");
    assert_eq!(handoff.blocks.len(), 2, "the prompt's two full blocks");

    // Stopped with the hand-over not yet pulled: the stream has ended, the blocks stay.
    worker.terminate();
    worker
        .wait_for(
            "streams ended; serving 1 hand-overs until the decode workers pull them",
            Duration::from_secs(10),
        )
        .await;
    let assets = dynamo_assets::cache_dir().expect("a cache directory");
    let model = dynamo_assets::SMOLLM2_135M_INSTRUCT
        .fetch(&assets)
        .expect("the model file");
    let block_size = BlockSize::new(16).expect("not zero");
    let layout = LlamaConfig::read(model)
        .expect("the model's configuration")
        .kv_layout("smollm2", block_size);
    let decode = TcpFetch::new(TcpFetchConfig::new(layout.block_bytes(), 8)).expect("a client");
    let fetched = decode
        .fetch(&handoff)
        .await
        .expect("pulled after the SIGTERM");
    assert_eq!(fetched.blocks, 2);
    drop(fetched);
    assert!(worker.child.try_wait().expect("waited on").is_none());
    decode.release(&handoff).await;

    // Released: the worker has nothing left to serve and exits 0.
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(worker.logged("drained"));
    assert!(!worker.logged("drain deadline passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_ends_with_a_504_and_the_next_is_served() {
    let port = free_port().expect("a free port").to_string();
    // A slow simulated engine: 2,000 tokens take far longer than the 1-second limit.
    let _serve = Process::start(&[
        "--engine",
        "mocker",
        "--speedup",
        "0.05",
        "--request-timeout",
        "1",
        "--port",
        &port,
    ]);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    let started = std::time::Instant::now();
    let (status, body) = frontend.complete("a long answer", 2000).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "timeout_error", "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (status, body) = frontend.complete("a short answer", 2).await;
    assert_eq!(status, 200, "{body}");
}
