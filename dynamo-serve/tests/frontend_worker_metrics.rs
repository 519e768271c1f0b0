//! A worker's series on the frontend's `/metrics`: the ones its NATS load reports set show
//! while the frontend routes to it and leave once it leaves; the index's leaves once the index
//! forgets it. The single process shows its own workers' engines the same way, their
//! preemptions under KV pressure among them.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::time::Duration;

use dynamo_transport::local::{LocalNats, free_port};
use support::{Frontend, Process, directory_frontend_with, registry_worker};

/// How long a worker may take to join or leave, or its report to arrive (one a second).
const WITHIN: Duration = Duration::from_secs(60);

/// The counter of a worker's preemptions, by worker.
const PREEMPTIONS: &str = "dynamo_worker_preemptions_total";

/// The series a load report sets, by worker.
const SERIES: [&str; 5] = [
    "dynamo_worker_active_requests",
    "dynamo_worker_waiting_requests",
    "dynamo_worker_kv_blocks_in_use",
    "dynamo_worker_kv_blocks_total",
    "dynamo_router_worker_kv_capacity_blocks",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_load_series_show_while_it_is_routed_and_go_once_it_leaves() {
    let nats = LocalNats::start().expect("nats-server starts");
    let url = nats.url();
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-load-series-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let (process, frontend) = directory_frontend_with(&registry, &["--nats", &url]).await;
    let flags = ["--nats", &url, "--kv-blocks", "64"];
    let mut worker = registry_worker("mocker", 5, &registry, &flags);
    process.wait_for("worker 5/0 at", WITHIN).await;
    let shown = |text: &str| {
        support::series_value(text, "dynamo_worker_kv_blocks_total", "5/0") == Some(64.0)
            && support::series_value(text, "dynamo_router_worker_kv_capacity_blocks", "5/0")
                == Some(64.0)
            && SERIES
                .iter()
                .all(|name| support::series_value(text, name, "5/0").is_some())
    };
    let text = frontend
        .wait_for_metrics("worker 5's load series", WITHIN, shown)
        .await;
    // Each name is one family: the series are not also recorded through the exporter.
    for name in SERIES {
        let families = text
            .lines()
            .filter(|line| *line == format!("# TYPE {name} gauge"))
            .count();
        assert_eq!(families, 1, "{name} in\n{text}");
    }
    // The engine's preemptions since it started, a counter (none yet).
    let counters = format!("# TYPE {PREEMPTIONS} counter");
    assert_eq!(
        text.lines().filter(|line| *line == counters).count(),
        1,
        "{text}"
    );
    assert_eq!(support::series_value(&text, PREEMPTIONS, "5/0"), Some(0.0));

    // It stops (and deregisters): the frontend lets it go, and its series leave /metrics.
    worker.terminate();
    worker.wait_exit(WITHIN).await;
    process.wait_for("worker 5/0 left", WITHIN).await;
    // Its series and, with no other worker left, the families' `# TYPE` lines.
    let gone =
        |text: &str| SERIES.iter().all(|name| !text.contains(name)) && !text.contains(PREEMPTIONS);
    frontend
        .wait_for_metrics("worker 5's load series gone", WITHIN, gone)
        .await;
}

/// With KV events, `dynamo_router_indexed_blocks` shows the blocks the index holds for a worker
/// and leaves `/metrics` once the index forgets the worker (30 s after it left), so workers that
/// come and go under new ids leave no series behind. It stayed at 0 before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_index_series_goes_once_the_index_forgets_it() {
    const INDEXED: &str = "dynamo_router_indexed_blocks";
    let nats = LocalNats::start().expect("nats-server starts");
    let url = nats.url();
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-index-series-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let port = free_port().expect("a free port").to_string();
    let args = ["frontend", "--port", &port, "--registry", &registry];
    let process = Process::start(&[&args[..], &["--router", "kv", "--nats", &url]].concat());
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    let flags = ["--nats", &url, "--kv-blocks", "64"];
    let mut worker = registry_worker("mocker", 6, &registry, &flags);
    process.wait_for("worker 6/0 at", WITHIN).await;
    let prompt = support::GREEDY_PROMPTS[2];
    let (status, _) = frontend.complete(prompt, 4).await;
    assert_eq!(status, 200);
    let indexed = |text: &str| support::series_value(text, INDEXED, "6/0").is_some_and(|v| v > 0.0);
    frontend
        .wait_for_metrics("worker 6's indexed blocks", WITHIN, indexed)
        .await;

    worker.terminate();
    worker.wait_exit(WITHIN).await;
    process.wait_for("worker 6/0 left", WITHIN).await;
    let gone = |text: &str| support::series_value(text, INDEXED, "6/0").is_none();
    frontend
        .wait_for_metrics("worker 6's indexed blocks gone", WITHIN, gone)
        .await;
}

/// The single process shows its own workers' queue and KV blocks on `/metrics`, and counts the
/// sequences their engines preempt when three long answers outgrow a 64-block cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_main_jobs_workers_show_their_cache_and_count_their_preemptions() {
    let port = free_port().expect("a free port").to_string();
    let args = [
        "--port",
        &port,
        "--engine",
        "mocker",
        "--workers",
        "1",
        "--kv-blocks",
        "64",
    ];
    let _process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    // 3 prompts of 256 tokens hold 48 of the 64 blocks; 300 tokens more each need 57 more.
    let _streams = support::fill_kv_cache(&frontend, 300).await;
    let preempted = |text: &str| {
        support::series_value(text, PREEMPTIONS, "0/0").is_some_and(|count| count >= 1.0)
            && support::series_value(text, "dynamo_worker_kv_blocks_total", "0/0") == Some(64.0)
            && support::series_value(text, "dynamo_worker_waiting_requests", "0/0").is_some()
            && support::series_value(text, "dynamo_worker_kv_blocks_in_use", "0/0").is_some()
    };
    let text = frontend
        .wait_for_metrics("a preemption on worker 0", WITHIN, preempted)
        .await;
    let counters = format!("# TYPE {PREEMPTIONS} counter");
    assert_eq!(
        text.lines().filter(|line| *line == counters).count(),
        1,
        "{text}"
    );
}
