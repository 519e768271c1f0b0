//! Busy thresholds and the router's wait queue, as a user sets them on the command line
//! (`--active-requests-threshold`, `--router-queue-size`): a request that finds every worker
//! busy waits for one to free up, or is refused 503 with `Retry-After` when there is no room to
//! wait; an `--engine-at` server's reported load alone makes it busy, and so does a worker's
//! NATS load report of another frontend's requests; a decode-block fraction in the frontend is
//! a share of each worker's reported cache (a NATS worker's, or a vLLM server's from its
//! metrics); and without a threshold nothing waits.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

#[path = "../../engines/upstream/tests/support/http_request.rs"]
mod http_request;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::{Frontend, Process, eventually};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use dynamo_transport::local::free_port;

/// How long a condition may take on a loaded machine.
const WITHIN: Duration = Duration::from_secs(60);

/// The single process with one simulated worker slowed twentyfold, so that a long answer
/// holds it for seconds, and `flags`; once it answers.
async fn slow_worker(flags: &[&str]) -> (Process, Frontend, u16) {
    let port = free_port().expect("a free port");
    let port_text = port.to_string();
    let mut args = vec![
        "--port",
        &port_text,
        "--engine",
        "mocker",
        "--speedup",
        "0.05",
    ];
    args.extend(["--workers", "1", "--embedding-model", "none"]);
    args.extend_from_slice(flags);
    let process = Process::start(&args);
    let frontend = Frontend::new(port);
    frontend.wait_ready().await;
    (process, frontend, port)
}

/// A streamed completion long enough (150 tokens, about 17 s at the worker's pace) to hold its
/// worker while the test sends another; its body, once its first event came.
async fn hold_the_worker(frontend: &Frontend) -> Incoming {
    let body = json!({
        "model": "smollm2", "prompt": "hold the worker", "max_tokens": 150,
        "ignore_eos": true, "stream": true,
    });
    support::first_events(frontend, &body).await.0
}

/// The value of the unlabelled series `name` in the Prometheus text `metrics`.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Wait until the router's wait queue holds `depth` requests.
async fn queue_depth(frontend: &Frontend, depth: f64) {
    let what = format!("a queue depth of {depth}");
    frontend
        .wait_for_metrics(&what, WITHIN, |text| {
            gauge(text, "dynamo_router_queue_depth") == Some(depth)
        })
        .await;
}

/// A completion of one token: its status, `Retry-After` and JSON body.
async fn one_token(frontend: &Frontend, prompt: &str) -> (u16, Option<String>, Value) {
    let body = json!({ "model": "smollm2", "prompt": prompt, "max_tokens": 1 });
    let response = frontend.post("/v1/completions", &body).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, support::json_body(response).await)
}

/// Whether `answer` is the router's refusal: overloaded, retry after 1 s.
fn refused_as_overloaded((status, retry_after, body): &(u16, Option<String>, Value)) -> bool {
    *status == 503
        && retry_after.as_deref() == Some("1")
        && body["error"]["code"] == "overloaded"
        && body["error"]["type"] == "overloaded_error"
}

/// The events a stream has ready now, without waiting for more.
async fn ready_events(body: &mut Incoming) -> String {
    let mut text = String::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::ZERO, body.frame()).await {
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_request_threshold_of_1_a_second_request_waits_for_the_first_then_is_served() {
    let (_process, frontend, port) = slow_worker(&["--active-requests-threshold", "1"]).await;
    let first = hold_the_worker(&frontend).await;

    // The one worker is busy: the second request waits in the router's queue.
    let second = tokio::spawn(async move { one_token(&Frontend::new(port), "second").await });
    queue_depth(&frontend, 1.0).await;

    // The first ends, the second is placed and served.
    let events = support::read_stream(first, WITHIN).await;
    assert!(events.contains("data: [DONE]"), "{events}");
    let (status, _, body) = second.await.expect("the second request's task");
    assert_eq!(status, 200, "{body}");
    queue_depth(&frontend, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_queue_of_0_a_request_over_the_threshold_is_refused_503_with_retry_after() {
    let flags = [
        "--active-requests-threshold",
        "1",
        "--router-queue-size",
        "0",
    ];
    let (_process, frontend, _) = slow_worker(&flags).await;
    let first = hold_the_worker(&frontend).await;

    let answer = one_token(&frontend, "second").await;
    assert!(refused_as_overloaded(&answer), "{answer:?}");

    // Once the first has ended there is room again.
    let events = support::read_stream(first, WITHIN).await;
    assert!(events.contains("data: [DONE]"), "{events}");
    let mut third = (0, None, Value::Null);
    eventually(
        "a request served after the first ended",
        WITHIN,
        async || {
            third = one_token(&frontend, "third").await;
            third.0 != 503
        },
    )
    .await;
    assert_eq!(third.0, 200, "{third:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_threshold_a_second_request_is_served_beside_the_first() {
    let (_process, frontend, _) = slow_worker(&[]).await;
    let mut first = hold_the_worker(&frontend).await;

    let (status, _, body) = one_token(&frontend, "second").await;
    assert_eq!(status, 200, "{body}");
    // The first was still running: the second did not wait for it.
    let so_far = ready_events(&mut first).await;
    assert!(!so_far.contains("[DONE]"), "{so_far}");
    let metrics = frontend.metrics().await;
    assert!(
        gauge(&metrics, "dynamo_router_queue_depth").unwrap_or(0.0) == 0.0,
        "{metrics}"
    );
}

/// A vLLM server that answers `/metrics` with 3 requests running and 2 waiting (other clients'
/// work) holding a tenth of its cache of 100 blocks of 16 tokens, or none once `idle`; and
/// every other request with 400, so that a request that
/// reaches it is told so by the engine, not by the router. Stops when dropped.
struct SharedEngine {
    url: String,
    idle: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SharedEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SharedEngine {
    async fn start() -> SharedEngine {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let idle = Arc::new(AtomicBool::new(false));
        let state = Arc::clone(&idle);
        // Connections live in the accept task's set: stopping the server closes them all.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.spawn(serve(socket, Arc::clone(&state)));
            }
        });
        SharedEngine { url, idle, task }
    }

    fn go_idle(&self) {
        self.idle.store(true, Ordering::SeqCst);
    }
}

/// What the engine's error says, to tell its answers from the router's.
const REACHED: &str = "reached the engine";

async fn serve(mut socket: TcpStream, idle: Arc<AtomicBool>) {
    while let Some((line, _)) = http_request::read_request(&mut socket).await {
        let (running, waiting, usage) = if idle.load(Ordering::SeqCst) {
            (0, 0, 0.0)
        } else {
            (3, 2, 0.1)
        };
        let (status, kind, body) = if line.split_whitespace().nth(1) == Some("/metrics") {
            let body = format!(
                "vllm:num_requests_running{{engine=\"0\"}} {running}\n\
                 vllm:num_requests_waiting{{engine=\"0\"}} {waiting}\n\
                 vllm:kv_cache_usage_perc{{engine=\"0\"}} {usage}\n\
                 vllm:cache_config_info{{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"100\"}} 1.0\n"
            );
            ("200 OK", "text/plain; version=0.0.4", body)
        } else {
            let body =
                json!({ "error": { "message": REACHED, "type": "BadRequestError", "code": 400 } });
            ("400 Bad Request", "application/json", body.to_string())
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A frontend over `engine` with `flags`, once the engine's first report (5 requests) has
/// landed; and its port.
async fn frontend_over(engine: &SharedEngine, flags: &[&str]) -> (Process, Frontend, u16) {
    let port = free_port().expect("a free port");
    let port_text = port.to_string();
    let engine_at = format!("vllm={},id=1", engine.url);
    let mut args = vec!["frontend", "--port", &port_text, "--router", "approx-kv"];
    args.extend(["--engine-at", &engine_at, "--embedding-model", "none"]);
    args.extend_from_slice(flags);
    let process = Process::start(&args);
    let frontend = Frontend::new(port);
    frontend.wait_ready().await;
    reported_waiting(&frontend, 2.0).await;
    (process, frontend, port)
}

/// Wait until the frontend has read `waiting` requests from the engine's `/metrics`.
async fn reported_waiting(frontend: &Frontend, waiting: f64) {
    let what = format!("a report of {waiting} waiting requests");
    frontend
        .wait_for_metrics(&what, WITHIN, |text| {
            support::series_value(text, "dynamo_engine_waiting_requests", "1/0") == Some(waiting)
        })
        .await;
}

/// Whether `answer` is the engine's own.
fn from_the_engine((status, _, body): &(u16, Option<String>, Value)) -> bool {
    *status == 400
        && body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains(REACHED))
}

/// With `threshold` and no room to wait: a request is refused while `engine` reports 5
/// requests of other clients, and reaches it once it reports itself idle.
async fn refused_by_the_report_alone(threshold: [&str; 2]) {
    let engine = SharedEngine::start().await;
    let mut flags = vec!["--router-queue-size", "0"];
    flags.extend(threshold);
    let (_process, frontend, _) = frontend_over(&engine, &flags).await;

    // The router has sent it nothing; its report makes it busy.
    let answer = one_token(&frontend, "while it is busy").await;
    assert!(refused_as_overloaded(&answer), "{threshold:?}: {answer:?}");

    // Once it reports itself idle a request reaches it.
    engine.go_idle();
    reported_waiting(&frontend, 0.0).await;
    let answer = one_token(&frontend, "once it is idle").await;
    assert!(from_the_engine(&answer), "{threshold:?}: {answer:?}");
}

/// 5 requests reported, a threshold of 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_server_busy_with_other_clients_work_refuses_by_its_report_alone() {
    refused_by_the_report_alone(["--active-requests-threshold", "4"]).await;
}

/// 2 waiting requests, each counted as this request's prompt (a few tokens, 2 at least): 4
/// tokens or more, above 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_servers_reported_queue_is_over_a_prefill_token_threshold() {
    refused_by_the_report_alone(["--active-prefill-tokens-threshold", "3"]).await;
}

/// 5 requests, each counted as this request's blocks (a prompt shorter than a block, plus one):
/// 5 blocks, above 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_servers_reported_requests_are_over_a_decode_block_threshold() {
    refused_by_the_report_alone(["--active-decode-blocks-threshold", "4"]).await;
}

/// A tenth of 100 blocks in use, as the server's metrics tell both: 10 blocks, above a
/// twentieth of its cache (5 blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_servers_reported_cache_use_is_over_a_decode_share_threshold() {
    refused_by_the_report_alone(["--active-decode-blocks-threshold", "0.05"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_while_an_engine_server_reports_itself_busy_and_goes_once_it_is_idle() {
    let engine = SharedEngine::start().await;
    let flags = ["--active-requests-threshold", "4"];
    let (_process, frontend, port) = frontend_over(&engine, &flags).await;

    let waiting = tokio::spawn(async move { one_token(&Frontend::new(port), "waits").await });
    queue_depth(&frontend, 1.0).await;

    // The next report wakes it, and it reaches the engine.
    engine.go_idle();
    let answer = waiting.await.expect("the waiting request's task");
    assert!(from_the_engine(&answer), "{answer:?}");
    queue_depth(&frontend, 0.0).await;
}

/// The frontend `frontend --router round-robin` (which shares no bookings with other
/// frontends) over the workers registered in `registry`, their load reports from NATS `nats`,
/// with `flags`.
async fn nats_frontend(registry: &str, nats: &str, flags: &[&str]) -> (Process, Frontend) {
    let port = free_port().expect("a free port");
    let port_text = port.to_string();
    let mut args = vec!["frontend", "--port", &port_text, "--registry", registry];
    args.extend(["--router", "round-robin", "--nats", nats]);
    args.extend(["--embedding-model", "none"]);
    args.extend_from_slice(flags);
    let process = Process::start(&args);
    let frontend = Frontend::new(port);
    frontend.wait_ready().await;
    (process, frontend)
}

/// Wait until `frontend` has read `worker`'s report of `active` requests from NATS.
async fn reported_active(frontend: &Frontend, worker: &str, active: f64) {
    let what = format!("worker {worker}'s report of {active} active requests");
    frontend
        .wait_for_metrics(&what, WITHIN, |text| {
            support::series_value(text, "dynamo_worker_active_requests", worker) == Some(active)
        })
        .await;
}

/// Two frontends in front of one slow worker found through discovery: the second's request
/// holds it, and the first, at a threshold of 1 request, refuses a request by the worker's NATS
/// report alone (it booked nothing against it); once the report says idle, it routes again.
/// Before the frontend gave NATS reports to its router, the first routed the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_busy_with_another_frontends_request_is_busy_by_its_nats_report() {
    let nats = dynamo_transport::local::LocalNats::start().expect("nats-server starts");
    let url = nats.url();
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-nats-busy-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let flags = [
        "--active-requests-threshold",
        "1",
        "--router-queue-size",
        "0",
    ];
    let (first_process, first) = nats_frontend(&registry, &url, &flags).await;
    let (second_process, second) = nats_frontend(&registry, &url, &[]).await;
    let worker_flags = ["--nats", &url, "--speedup", "0.05"];
    let _worker = support::registry_worker("mocker", 7, &registry, &worker_flags);
    first_process.wait_for("worker 7/0 at", WITHIN).await;
    second_process.wait_for("worker 7/0 at", WITHIN).await;
    reported_active(&first, "7/0", 0.0).await;

    // The second frontend's request holds the worker; the first has booked nothing.
    let held = hold_the_worker(&second).await;
    reported_active(&first, "7/0", 1.0).await;
    let answer = one_token(&first, "while the other frontend's request runs").await;
    assert!(refused_as_overloaded(&answer), "{answer:?}");

    // The held request ends: the worker reports itself idle, and the first routes to it.
    let events = support::read_stream(held, WITHIN).await;
    assert!(events.contains("data: [DONE]"), "{events}");
    reported_active(&first, "7/0", 0.0).await;
    let (status, _, body) = one_token(&first, "once the worker is idle").await;
    assert_eq!(status, 200, "{body}");
}

/// `--active-decode-blocks-threshold` as a fraction in the frontend: a share of each worker's
/// KV cache as its NATS load reports give it. A worker of 64 blocks at 0.02 (1.28 blocks) is
/// busy while it holds a request of a few prompt blocks, and a request with no room to wait is
/// refused; once that request ends it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_block_fraction_in_the_frontend_is_a_share_of_each_workers_reported_cache() {
    let nats = dynamo_transport::local::LocalNats::start().expect("nats-server starts");
    let url = nats.url();
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-share-busy-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let flags = [
        "--nats",
        &url,
        "--active-decode-blocks-threshold",
        "0.02",
        "--router-queue-size",
        "0",
    ];
    let (process, frontend) = support::directory_frontend_with(&registry, &flags).await;
    let worker_flags = ["--nats", &url, "--speedup", "0.05", "--kv-blocks", "64"];
    let _worker = support::registry_worker("mocker", 8, &registry, &worker_flags);
    process.wait_for("worker 8/0 at", WITHIN).await;
    frontend
        .wait_for_metrics("worker 8's reported cache size", WITHIN, |text| {
            support::series_value(text, "dynamo_router_worker_kv_capacity_blocks", "8/0")
                == Some(64.0)
        })
        .await;

    // A prompt of a few blocks (of 16 tokens), held for seconds: over 2% of 64 blocks.
    let prompt = "hold the worker with a prompt of several blocks ".repeat(8);
    let body = json!({
        "model": "smollm2", "prompt": prompt, "max_tokens": 150,
        "ignore_eos": true, "stream": true,
    });
    let held = support::first_events(&frontend, &body).await.0;
    let answer = one_token(&frontend, "while the worker holds its share").await;
    assert!(refused_as_overloaded(&answer), "{answer:?}");

    let events = support::read_stream(held, WITHIN).await;
    assert!(events.contains("data: [DONE]"), "{events}");
    // Its report of the request, which counts too, lapses with the next one.
    reported_active(&frontend, "8/0", 0.0).await;
    let (status, _, body) = one_token(&frontend, "once it is free").await;
    assert_eq!(status, 200, "{body}");
}
