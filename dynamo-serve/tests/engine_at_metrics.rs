//! An engine server's load on the frontend's `/metrics` (`--engine-at`): its series show while
//! its `/metrics` scrape is fresh, leave while the scrape is stale, and come back with the next
//! good scrape; `dynamo_engine_metrics_up` says which, all along. And the same load in the
//! router's health checks: a server busy with other clients' work is not ejected for a late
//! canary, an idle one that does not answer is. And a circuit breaker on each server
//! (`--breaker-failures`) that spares a failing one the requests after its limit.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

#[path = "../../engines/upstream/tests/support/http_request.rs"]
mod http_request;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{Frontend, eventually};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// How long a scrape may take to land, or to go stale (the frontend's limit is 5 s).
const WITHIN: Duration = Duration::from_secs(30);

/// The series a scrape sets, by worker.
const LOAD: [&str; 3] = [
    "dynamo_engine_running_requests",
    "dynamo_engine_waiting_requests",
    "dynamo_engine_kv_cache_usage",
];

/// Whether the server is scraped.
const UP: &str = "dynamo_engine_metrics_up";

/// A vLLM server's `/metrics` that answers (3 running, 2 waiting, KV cache half used; nothing
/// running or waiting once `idle`), and llama.cpp's beside it (one request processing, one
/// deferred; none once `idle`), while `answers` holds and with 503 otherwise; every other
/// request is answered 503, or never when the server `hangs`. Stops when dropped.
struct FakeEngine {
    url: String,
    answers: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    /// The requests other than `/metrics` scrapes it got.
    others: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`FakeEngine`] does with a request that is not a `/metrics` scrape.
#[derive(Clone, Copy, PartialEq)]
enum Others {
    Refuse,
    Hang,
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEngine {
    async fn start(others: Others) -> FakeEngine {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let answers = Arc::new(AtomicBool::new(true));
        let idle = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let state = State {
            answers: Arc::clone(&answers),
            idle: Arc::clone(&idle),
            others,
            seen: Arc::clone(&seen),
        };
        // Connections live in the accept task's set: stopping the server closes them all.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.spawn(serve(socket, state.clone()));
            }
        });
        FakeEngine {
            url,
            answers,
            idle,
            others: seen,
            task,
        }
    }

    fn answer(&self, answers: bool) {
        self.answers.store(answers, Ordering::SeqCst);
    }

    fn go_idle(&self) {
        self.idle.store(true, Ordering::SeqCst);
    }
}

/// What a [`FakeEngine`]'s connections share.
#[derive(Clone)]
struct State {
    answers: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    others: Others,
    seen: Arc<AtomicUsize>,
}

async fn serve(mut socket: TcpStream, state: State) {
    let State {
        answers,
        idle,
        others,
        seen,
    } = state;
    const BUSY: &str = "vllm:num_requests_running{engine=\"0\"} 3\n\
                        vllm:num_requests_waiting{engine=\"0\"} 2\n\
                        vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n\
                        llamacpp:requests_processing 1\n\
                        llamacpp:requests_deferred 1\n";
    const IDLE: &str = "vllm:num_requests_running{engine=\"0\"} 0\n\
                        vllm:num_requests_waiting{engine=\"0\"} 0\n\
                        vllm:kv_cache_usage_perc{engine=\"0\"} 0\n\
                        llamacpp:requests_processing 0\n\
                        llamacpp:requests_deferred 0\n";
    while let Some((line, _)) = http_request::read_request(&mut socket).await {
        let metrics = line.split_whitespace().nth(1) == Some("/metrics");
        if !metrics {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        let answer = if metrics && answers.load(Ordering::SeqCst) {
            let body = if idle.load(Ordering::SeqCst) {
                IDLE
            } else {
                BUSY
            };
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
        } else if !metrics && others == Others::Hang {
            // Queued behind other work, or wedged: the connection stays open, unanswered.
            std::future::pending::<()>().await;
            return;
        } else {
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_owned()
        };
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Whether worker 1's load series show its server's figures and it is marked scraped.
fn shown(text: &str) -> bool {
    support::series_value(text, "dynamo_engine_running_requests", "1/0") == Some(3.0)
        && support::series_value(text, "dynamo_engine_waiting_requests", "1/0") == Some(2.0)
        && support::series_value(text, "dynamo_engine_kv_cache_usage", "1/0") == Some(0.5)
        && support::series_value(text, UP, "1/0") == Some(1.0)
}

/// Whether worker 1's load series are gone and it is marked not scraped.
fn hidden(text: &str) -> bool {
    LOAD.iter()
        .all(|name| support::series_value(text, name, "1/0").is_none())
        && support::series_value(text, UP, "1/0") == Some(0.0)
}

/// Wait until `/metrics` holds what `holds` asks (named `what`); its text.
async fn wait_until(frontend: &Frontend, what: &str, holds: fn(&str) -> bool) -> String {
    let mut text = String::new();
    eventually(what, WITHIN, async || {
        text = frontend.metrics().await;
        holds(&text)
    })
    .await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engines_load_series_leave_while_its_scrape_is_stale_and_come_back_with_it() {
    let engine = FakeEngine::start(Others::Refuse).await;
    let engines = [format!("vllm={},id=1", engine.url)];
    let (_process, frontend) = support::engine_frontend_routed(&engines, "approx-kv").await;

    let text = wait_until(&frontend, "worker 1's load series", shown).await;
    // Each name is one family: the series are not also recorded through the exporter.
    for name in LOAD.iter().chain([&UP]) {
        let families = text
            .lines()
            .filter(|line| *line == format!("# TYPE {name} gauge"))
            .count();
        assert_eq!(families, 1, "{name} in\n{text}");
    }

    // Its scrape fails past the staleness limit: the dead figures leave /metrics.
    engine.answer(false);
    wait_until(&frontend, "worker 1's load series gone while stale", hidden).await;

    // The next good scrape brings them back.
    engine.answer(true);
    wait_until(&frontend, "worker 1's load series back", shown).await;
}

/// The value of the series named exactly `series` (name and labels) in `text`; 0 without one.
fn counted(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const EXCUSED: &str = "dynamo_router_canaries_excused_total";
const EJECTED: &str = "dynamo_router_ejections_total{reason=\"canary\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_canary_does_not_eject_a_vllm_server_that_reports_other_work_until_it_is_idle() {
    late_canaries("vllm").await;
}

/// The same through an `openai` server that exports llama.cpp's metrics (its server with
/// `--metrics`): one request processing, one deferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_canary_does_not_eject_a_llama_cpp_server_that_reports_other_work_until_idle() {
    late_canaries("openai").await;
}

/// A server of `kind` that answers no completion, so that each idle canary (every 5 s) misses
/// its 5 s deadline: not held against it while its `/metrics` says it runs or queues other
/// clients' requests, and ejecting it once that says it is idle.
async fn late_canaries(kind: &str) {
    let engine = FakeEngine::start(Others::Hang).await;
    let engines = [format!("{kind}={},id=1", engine.url)];
    let (_process, frontend) = support::engine_frontend_routed(&engines, "approx-kv").await;

    let text = wait_until(&frontend, "a late canary excused", |text| {
        counted(text, EXCUSED) >= 1.0
    })
    .await;
    assert_eq!(counted(&text, EJECTED), 0.0, "{text}");

    engine.go_idle();
    wait_until(&frontend, "the ejection by a canary", |text| {
        counted(text, EJECTED) == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_spares_a_failing_server_every_request_after_its_limit() {
    let engine = FakeEngine::start(Others::Refuse).await;
    let engine_at = format!("vllm={},id=1", engine.url);
    let flags = [
        "--engine-at",
        &engine_at,
        "--breaker-failures",
        "2",
        "--breaker-cool-down",
        "600",
    ];
    let (process, frontend) = support::frontend_with_env(&flags, &[]).await;
    for n in 0..6 {
        let (status, body) = frontend.complete(&format!("request {n}"), 4).await;
        assert!(status >= 500, "{status}: {body}");
    }
    // Two failures (client requests, or an idle canary among them) opened the breaker: every
    // later attempt, migrations and canaries included, was refused without reaching the server
    // (until the router ejected it, after which none was sent there).
    assert_eq!(engine.others.load(Ordering::SeqCst), 2);
    let text = frontend.metrics().await;
    let opened = "dynamo_circuit_breaker_transitions_total{to=\"open\"}";
    assert_eq!(counted(&text, opened), 1.0, "{text}");
    let refused = counted(&text, "dynamo_circuit_breaker_refused_total");
    assert!(refused >= 1.0, "{text}");
    // The breaker's refusals are the worker's failures to the router, which ejects it.
    let ejected = "dynamo_router_ejections_total{reason=\"failed\"}";
    assert_eq!(counted(&text, ejected), 1.0, "{text}");
    assert!(process.logged("circuit breaker of worker 1/0 opened: 2 failures in a row"));
}
