//! The router learns each worker's KV capacity from its load reports: a frontend and two
//! mocker workers (`--kv-blocks` 32 and 4096), a long prompt first cached on the small one.
//! Once the reports have reached the frontend's router (its gauge
//! `dynamo_router_worker_kv_capacity_blocks` says so), the repeat leaves the small worker,
//! whose memory the prompt would nearly fill, for the large one; without an event plane there
//! are no reports, and the repeat stays with its cache. An engine server that tells its cache's
//! size (TensorRT-LLM in its iteration statistics, vLLM in `vllm:cache_config_info`) has it in
//! the router too.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

#[path = "../../engines/upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;
use std::time::Duration;

use dynamo_transport::local::{LocalNats, free_port};
use replay::Replay;
use support::{Frontend, Process, decisions, directory_frontend_with, long_prompt};

/// The small worker's KV blocks (of 16 tokens): the prompt's 15 or so blocks are half of them,
/// which it would likely find taken.
const SMALL_BLOCKS: u64 = 32;
/// The large worker's KV blocks.
const LARGE_BLOCKS: u64 = 4096;
/// How long a worker may take to join, or its report to arrive (one a second).
const WITHIN: Duration = Duration::from_secs(60);

/// The capacity the frontend's router has for worker `id`, as its gauge says.
fn router_capacity(metrics: &str, id: u64) -> Option<u64> {
    let worker = format!("worker=\"{id}/0\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("dynamo_router_worker_kv_capacity_blocks{"))
        .find(|line| line.contains(&worker))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Start worker `id` with `blocks` KV blocks in `registry`, publishing its load to `nats` if
/// given, and wait until the frontend routes to it (and, with `nats`, knows its capacity).
async fn join(
    id: u64,
    blocks: u64,
    registry: &str,
    nats: Option<&str>,
    frontend: (&Process, &Frontend),
) -> Process {
    let (id_text, blocks_text) = (id.to_string(), blocks.to_string());
    let mut args = vec!["worker", "--engine", "mocker", "--id", &id_text];
    args.extend(["--registry", registry, "--kv-blocks", &blocks_text]);
    if let Some(url) = nats {
        args.extend(["--nats", url]);
    }
    let worker = Process::start(&args);
    let (process, frontend) = frontend;
    process.wait_for(&format!("worker {id}/0 at"), WITHIN).await;
    if nats.is_some() {
        wait_for_capacity(frontend, id, blocks).await;
    }
    worker
}

/// Wait until the frontend's router has `blocks` as worker `id`'s capacity.
async fn wait_for_capacity(frontend: &Frontend, id: u64, blocks: u64) {
    let what = format!("the router never had worker {id}'s capacity");
    frontend
        .wait_for_metrics(&what, WITHIN, |text| {
            router_capacity(text, id) == Some(blocks)
        })
        .await;
}

/// Cache the long prompt on the small worker 1 while it is the only one, add the large worker
/// 2, and send the prompt again: the worker the repeat went to.
async fn repeat_goes_to(nats: Option<&str>, tag: &str) -> u64 {
    let temporary = tempfile::Builder::new()
        .prefix(&format!("dynamo-{tag}-"))
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let flags: Vec<&str> = nats.map(|url| vec!["--nats", url]).unwrap_or_default();
    let (process, frontend) = directory_frontend_with(&registry, &flags).await;
    let at = (&process, &frontend);
    let _small = join(1, SMALL_BLOCKS, &registry, nats, at).await;
    let prompt = long_prompt("c");
    let (status, body) = frontend.complete(&prompt, 2).await;
    assert_eq!(status, 200, "{body}");
    let _large = join(2, LARGE_BLOCKS, &registry, nats, at).await;
    let (status, body) = frontend.complete(&prompt, 2).await;
    assert_eq!(status, 200, "{body}");
    let metrics = frontend.metrics().await;
    match (decisions(&metrics, 1), decisions(&metrics, 2)) {
        (2, 0) => 1,
        (1, 1) => 2,
        other => panic!("decisions for workers 1 and 2: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_capacities_steer_a_long_prompt_off_the_nearly_full_small_worker() {
    let nats = LocalNats::start().expect("nats-server starts");
    assert_eq!(repeat_goes_to(Some(&nats.url()), "reported").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_load_reports_the_long_prompt_stays_with_its_cache() {
    assert_eq!(repeat_goes_to(None, "unreported").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trtllm_servers_cache_size_reaches_the_router_in_its_blocks() {
    // Its iteration statistics: 512 blocks of 32 tokens, 1,024 of the router's 16.
    capacity_reaches_the_router(
        "trtllm",
        "../engines/trtllm/tests/fixtures/metrics.http",
        1024,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_servers_cache_size_reaches_the_router_in_its_blocks() {
    // Recorded from a live vLLM 0.32.0: `vllm:cache_config_info` says 1,456 blocks of 32
    // tokens, 2,912 of the router's 16.
    let fixture = "../engines/vllm/tests/fixtures/live_metrics.http";
    capacity_reaches_the_router("vllm", fixture, 2912).await;
}

/// A frontend in front of a `kind` server whose `/metrics` answers the fixture at `path`
/// (from this package's folder) gives the server `blocks` of capacity in its router.
async fn capacity_reaches_the_router(kind: &str, path: &str, blocks: u64) {
    let metrics = std::fs::read(replay::package_dir().join(path)).expect("the fixture");
    let server = Replay::start(HashMap::from([("/metrics".to_owned(), metrics)])).await;
    let port = free_port().expect("a free port").to_string();
    let engine = format!("{kind}={},id=7", server.url());
    let args = ["frontend", "--port", &port, "--router", "approx-kv"];
    let _process = Process::start(&[&args[..], &["--engine-at", &engine]].concat());
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    wait_for_capacity(&frontend, 7, blocks).await;
}
