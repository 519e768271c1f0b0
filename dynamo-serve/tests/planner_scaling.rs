//! The planner's local-process scaler (`dynamo_planner::local::LocalProcesses`) scales a real
//! deployment: `dynamo-serve worker` processes running the mocker, which join a frontend
//! through a directory registry. A worker added is routed to; a worker removed leaves routing
//! at once and finishes its stream, losing no token. And `dynamo-serve planner` runs the
//! load-based planner over such workers, from their load reports on NATS, and the SLA planner,
//! from the frontend's traffic reports on NATS; with `--disaggregated`, over a prefill and a
//! decode pool registered in a real etcd, whose workers leave when the planner is killed.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::WorkerRole;
use dynamo_planner::local::{LocalProcesses, RegistryDirectory, WorkerTemplate};
use dynamo_planner::{PoolSize, Scaler};
use hyper::body::Incoming;
use serde_json::{Value, json};

use dynamo_transport::events::{EventPlane, FrontendTraffic, NatsEvents};
use dynamo_transport::local::{LocalEtcd, LocalNats, free_port};
use futures::StreamExt;
use support::{
    Frontend, Process, decisions, directory_frontend, directory_frontend_with, fill_kv_cache,
    first_events, read_stream, registered, streamed_completion,
};

const POOL: WorkerRole = WorkerRole::Aggregated;
/// Tokens per long stream: about 11 s of the mocker at `--speedup 0.2`, long enough to outlast
/// the scale-down and the requests sent during the drain.
const MAX_TOKENS: u64 = 400;

/// A pool of `desired` workers, `ready` of them ready.
fn sized(desired: usize, ready: usize) -> PoolSize {
    PoolSize { desired, ready }
}

/// Wait until the scaler reports `expected`.
async fn settles(scaler: &LocalProcesses, expected: PoolSize) {
    let started = Instant::now();
    loop {
        let size = scaler.size(POOL).await.expect("the registry is readable");
        if size == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pool is {size:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streamed completion of a prompt of `token` repeated (the mocker echoes it, so the text
/// shows a lost or repeated token); its body and first events.
async fn open_stream(frontend: &Frontend, token: u32) -> (Incoming, String) {
    let body = json!({
        "model": "smollm2", "prompt": vec![token; 64], "max_tokens": MAX_TOKENS,
        "stream": true, "stream_options": { "include_usage": true },
    });
    first_events(frontend, &body).await
}

/// Read the rest of a stream; assert it ends whole.
async fn ends_whole(stream: Incoming, mut events: String) -> Value {
    events.push_str(&read_stream(stream, Duration::from_secs(120)).await);
    let (text, usage, errors, done) = streamed_completion(&events);
    assert!(done && errors == 0, "the stream ends well:\n{events}");
    assert_eq!(usage["completion_tokens"], MAX_TOKENS, "{usage}");
    assert!(!text.is_empty());
    usage
}

fn log_of(logs: &Path, id: u64) -> String {
    std::fs::read_to_string(logs.join(format!("{POOL}-{id}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_process_scaler_adds_a_routed_worker_and_drains_a_removed_one() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-scaling-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let (registry, logs) = (directory.join("registry"), directory.join("logs"));
    let workers = WorkerTemplate::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(["worker", "--engine", "mocker", "--speedup", "0.2"])
        .args(["--drain-timeout", "60", "--registry"])
        .arg(&registry)
        .log_dir(&logs);
    let scaler = LocalProcesses::new(RegistryDirectory::new(&registry)).with_pool(POOL, workers);

    // One worker, then the frontend over the registry.
    scaler.scale(POOL, 1).await.expect("a worker starts");
    let (frontend_process, frontend) = directory_frontend(&registry.display().to_string()).await;
    settles(&scaler, sized(1, 1)).await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;
    let (status, body) = frontend.complete("one worker", 2).await;
    assert_eq!(status, 200, "{body}");

    // 1 → 2: ready once it has registered, and the frontend routes to it. Two long streams of
    // different prompts: the second, booked while the first runs, goes to the idle worker.
    scaler.scale(POOL, 2).await.expect("a second worker starts");
    settles(&scaler, sized(2, 2)).await;
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;
    let before = frontend.metrics().await;
    let (first, first_events) = open_stream(&frontend, 314).await;
    let (second, second_events) = open_stream(&frontend, 271).await;
    let after = frontend.metrics().await;
    let routed = |id| decisions(&after, id) - decisions(&before, id);
    assert_eq!((routed(1), routed(2)), (1, 1), "one stream on each worker");

    // 2 → 1: the newest worker (2) is stopped with SIGTERM while a stream runs on it. It stops
    // counting as ready at once, leaves routing, and drains.
    scaler.scale(POOL, 1).await.expect("a worker stops");
    let size = scaler.size(POOL).await.expect("a size");
    assert_eq!(size, sized(1, 1));
    assert_eq!(scaler.draining(POOL), 1);
    frontend_process
        .wait_for("worker 2/0 left", Duration::from_secs(10))
        .await;
    let before = frontend.metrics().await;
    for n in 0..4 {
        let (status, body) = frontend.complete(&format!("during the drain {n}"), 2).await;
        assert_eq!(status, 200, "{body}");
    }
    let after = frontend.metrics().await;
    assert_eq!(decisions(&after, 1), decisions(&before, 1) + 4);
    assert_eq!(decisions(&after, 2), decisions(&before, 2));
    assert!(
        scaler.draining(POOL) == 1 && !log_of(&logs, 2).contains("drained"),
        "the stream outlasts the requests sent during the drain"
    );

    // Both streams end whole, none migrated; the stopped worker then exits, drained.
    let (first, second) = tokio::join!(
        ends_whole(first, first_events),
        ends_whole(second, second_events)
    );
    assert_eq!(first["prompt_tokens"], second["prompt_tokens"]);
    let metrics = frontend.metrics().await;
    assert!(
        !metrics.contains("dynamo_router_migrations_total"),
        "{metrics}"
    );
    let started = Instant::now();
    while scaler.draining(POOL) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "worker 2 still running:\n{}",
            log_of(&logs, 2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log_of(&logs, 2).contains("drained"), "{}", log_of(&logs, 2));
    settles(&scaler, sized(1, 1)).await;

    scaler.shutdown(Duration::from_secs(10)).await;
    drop(frontend_process);
}

/// `dynamo-serve planner` over `registry` and `nats`, a step a second, one or two workers, with
/// `flags`, starting its workers with `worker`.
fn planner(registry: &str, nats: &LocalNats, flags: &[&str], worker: &[&str]) -> Process {
    let url = nats.url();
    let mut args = vec!["planner", "--registry", registry, "--nats", &url];
    args.extend(["--interval", "1", "--max-workers", "2"]);
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(worker);
    Process::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_command_grows_the_pool_under_load_and_shrinks_it_when_calm() {
    let nats = LocalNats::start().expect("nats-server starts");
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-planner-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    // Small KV caches (64 blocks of 16 tokens): three long prompts fill one worker's.
    let worker = [
        "--engine",
        "mocker",
        "--speedup",
        "0.2",
        "--kv-blocks",
        "64",
    ];
    let mut planner = planner(&registry, &nats, &["--drain-timeout", "30"], &worker);
    let (frontend_process, frontend) = directory_frontend(&registry).await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;

    // Under load the planner starts a second worker, which joins the frontend.
    let streams = fill_kv_cache(&frontend, MAX_TOKENS).await;
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;
    assert!(planner.logged("grow by one to 2") && planner.logged("started worker"));

    // Without load (the streams dropped, which cancels them) it stops the second worker.
    drop(streams);
    frontend_process
        .wait_for("worker 2/0 left", Duration::from_secs(60))
        .await;
    assert!(planner.logged("shrink by one to 1") && planner.logged("stopping worker"));
    let (status, body) = frontend.complete("after the load", 2).await;
    assert_eq!(status, 200, "{body}");

    // SIGTERM stops the planner and its workers, which leave the registry.
    planner.terminate();
    let status = planner.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(registered(directory), 0);
}

/// A profile of a slow worker: 400 prompt tokens a second, one request at a time.
const SLOW_WORKER: &str = r#"{
  "engine": "mocker",
  "prefill": [
    { "input_tokens": 64, "ttft_ms": 160.0, "tokens_per_s": 400.0 },
    { "input_tokens": 1024, "ttft_ms": 2560.0, "tokens_per_s": 400.0 }
  ],
  "decode": [
    { "context_tokens": 256, "concurrency": 1, "kv_usage": 0.01, "itl_ms": 10.0, "tokens_per_s": 100.0 },
    { "context_tokens": 256, "concurrency": 8, "kv_usage": 0.08, "itl_ms": 12.0, "tokens_per_s": 660.0 },
    { "context_tokens": 1024, "concurrency": 1, "kv_usage": 0.04, "itl_ms": 11.0, "tokens_per_s": 90.0 },
    { "context_tokens": 1024, "concurrency": 8, "kv_usage": 0.3, "itl_ms": 14.0, "tokens_per_s": 570.0 }
  ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_planner_grows_the_pool_from_the_frontends_traffic_reports() {
    let nats = LocalNats::start().expect("nats-server starts");
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-sla-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let profile = directory.join("profile.json");
    std::fs::write(&profile, SLOW_WORKER).expect("written");
    let registry = directory.join("registry").display().to_string();
    let profile = profile.display().to_string();
    let metrics_port = free_port().expect("a free port");
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let sla = [
        "--policy",
        "sla",
        "--profile",
        &profile,
        "--ttft-ms",
        "1000",
        "--metrics-addr",
        &metrics_addr,
    ];
    let mut planner = planner(&registry, &nats, &sla, &["--engine", "mocker"]);
    // The frontend reports its traffic on NATS.
    let (frontend_process, frontend) =
        directory_frontend_with(&registry, &["--nats", &nats.url()]).await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;

    // Fresh 256-token prompts, eight at a time: more prompt tokens a second than the profile
    // says one worker computes. The mocker itself keeps up, so no queue builds: only the
    // traffic can tell the planner to grow.
    let frontend = Arc::new(frontend);
    let load = {
        let frontend = Arc::clone(&frontend);
        tokio::spawn(async move {
            for round in 0_u32.. {
                let posts = (0..8).map(|n| {
                    let body = json!({
                        "model": "smollm2", "prompt": vec![1_000 + round * 8 + n; 256],
                        "max_tokens": 4,
                    });
                    let frontend = Arc::clone(&frontend);
                    async move { frontend.complete_with(&body).await }
                });
                for (status, body) in futures::future::join_all(posts).await {
                    assert_eq!(status, 200, "{body}");
                }
            }
        })
    };
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;
    // The SLA policy decided it, from the traffic: a forecast of requests a second. (The load
    // goes on until the metrics are read: a planner step after it ends observes no traffic.)
    let grown = planner.lines(&["policy=\"sla\"", "target=Aggregated(2)"]);
    eprintln!("{grown:?}");
    assert!(!grown.is_empty(), "the SLA policy grew the pool");
    // Each decision's line names the rule that set the pool's size.
    assert!(
        grown.iter().all(|line| line.contains("rules=aggregated=")),
        "{grown:?}"
    );
    assert!(planner.logged("started worker"));
    // Its metrics say so too: the target, the two workers ready, the traffic it planned from.
    let metrics = Frontend::new(metrics_port)
        .wait_for_metrics("two workers ready", Duration::from_secs(30), |text| {
            text.contains("dynamo_planner_ready_replicas{pool=\"aggregated\"} 2")
        })
        .await;
    assert!(metrics.contains("dynamo_planner_target_replicas{pool=\"aggregated\"} 2"));
    let stepped = |line: &str| line.starts_with("dynamo_planner_steps_total{policy=\"sla\"}");
    assert!(metrics.lines().any(stepped), "{metrics}");
    // The rule that grew the pool is counted, by pool: its plan, the pressure, or the
    // bounds where the policy asked for more than two.
    let grew = ["plan", "pressure", "bounds"];
    let ruled = |line: &str| {
        line.starts_with("dynamo_planner_rule_steps_total{")
            && line.contains("pool=\"aggregated\"")
            && grew
                .iter()
                .any(|rule| line.contains(&format!("rule=\"{rule}\"")))
    };
    assert!(metrics.lines().any(ruled), "{metrics}");
    let observed = metrics
        .lines()
        .find_map(|line| line.strip_prefix("dynamo_planner_observed_requests_per_second "))
        .and_then(|rate| rate.parse::<f64>().ok());
    assert!(observed.is_some_and(|rate| rate > 0.0), "{metrics}");
    load.abort();

    // A frontend that stops says so in its last traffic report, so the planner does not wait
    // to hear from it again.
    let events = NatsEvents::connect(&nats.url(), "dynamo")
        .await
        .expect("NATS");
    let mut reports = events
        .subscribe::<FrontendTraffic>()
        .await
        .expect("subscribed");
    frontend_process.terminate();
    let last = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(report) = reports.next().await {
            if report.is_ok_and(|report| report.last) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(last, Ok(true), "the frontend's last report");

    planner.terminate();
    let status = planner.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disaggregated_planner_sizes_prefill_and_decode_pools_registered_in_etcd() {
    let nats = LocalNats::start().expect("nats-server starts");
    let etcd = LocalEtcd::start().expect("etcd starts");
    let (nats_url, etcd_url) = (nats.url(), etcd.url());
    let mut args = vec!["planner", "--etcd", &etcd_url, "--nats", &nats_url];
    args.extend(["--disaggregated", "--interval", "1", "--max-workers", "2"]);
    args.extend(["--drain-timeout", "30", "--"]);
    // Candle workers (a split pair must say how its KV blocks are laid out, which mocker
    // workers cannot), with small KV caches (64 blocks of 16 tokens): three long streams fill
    // one decode worker's.
    args.extend(["--kv-blocks", "64"]);
    let mut planner = Process::start(&args);
    let port = free_port().expect("a free port").to_string();
    let frontend_process = Process::start(&[
        "frontend",
        "--port",
        &port,
        "--etcd",
        &etcd_url,
        "--router",
        "approx-kv",
    ]);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    // The planner starts one worker per pool, the prefill worker first.
    for joined in ["worker 1/0 at", "worker 2/0 at"] {
        frontend_process
            .wait_for(joined, Duration::from_secs(60))
            .await;
    }
    assert_eq!(planner.count(&["started worker", "pool=prefill"]), 1);
    assert_eq!(planner.count(&["started worker", "pool=decode"]), 1);
    let (status, body) = frontend.complete("split in two", 2).await;
    assert_eq!(status, 200, "{body}");
    let metrics = frontend.metrics().await;
    assert!(
        metrics.contains("dynamo_disagg_requests_total{placement="),
        "{metrics}"
    );

    // Long streams fill the decode worker's KV cache: the planner grows the decode pool.
    let streams = fill_kv_cache(&frontend, MAX_TOKENS).await;
    frontend_process
        .wait_for("worker 3/0 at", Duration::from_secs(60))
        .await;
    assert_eq!(
        planner.count(&["started worker", "pool=decode", "worker=3"]),
        1
    );

    // Calm again (the streams dropped, which cancels them), it stops the third worker.
    drop(streams);
    frontend_process
        .wait_for("worker 3/0 left", Duration::from_secs(60))
        .await;
    assert_eq!(
        planner.count(&["stopping worker", "pool=decode", "worker=3"]),
        1
    );

    // Killed outright (SIGKILL), the planner stops nothing itself: its workers see it gone
    // (`--exit-with-parent`), drain and leave etcd. (SIGTERM is the test above.)
    planner.kill();
    for left in ["worker 1/0 left", "worker 2/0 left"] {
        frontend_process
            .wait_for(left, Duration::from_secs(30))
            .await;
    }
}
