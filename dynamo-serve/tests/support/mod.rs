//! What the deployment tests share: `dynamo-serve` child processes whose standard error is
//! collected, and a small HTTP client for a frontend.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use dynamo_transport::local::{LocalAuthority, free_port};

/// A `dynamo-serve` child process whose standard error is collected; killed on drop.
pub(crate) struct Process {
    pub(crate) child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread that collects standard error: finished once the pipe closed, so that
    /// everything the process wrote is in `log`.
    collector: std::thread::JoinHandle<()>,
}

impl Process {
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with `env` added to the environment (e.g. `RUST_LOG`).
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-serve"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dynamo-serve runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().expect("piped"));
        let collected = Arc::clone(&log);
        let collector = std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                collected.lock().expect("not poisoned").push(line);
            }
        });
        Process {
            child,
            log,
            collector,
        }
    }

    pub(crate) fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|line| line.contains(text))
    }

    /// How many lines of standard error contain every one of `parts`.
    pub(crate) fn count(&self, parts: &[&str]) -> usize {
        self.lines(parts).len()
    }

    /// The lines of standard error that contain every one of `parts`.
    pub(crate) fn lines(&self, parts: &[&str]) -> Vec<String> {
        self.log
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .cloned()
            .collect()
    }

    /// Wait until a line of standard error contains `text`; how long it took.
    pub(crate) async fn wait_for(&self, text: &str, within: Duration) -> Duration {
        self.wait_for_count(&[text], 1, within).await
    }

    /// Wait until `count` lines of standard error contain every one of `parts`; how long it
    /// took.
    pub(crate) async fn wait_for_count(
        &self,
        parts: &[&str],
        count: usize,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        while self.count(parts) < count {
            let log = self.log.lock().expect("not poisoned").join("\n");
            assert!(
                started.elapsed() < within,
                "no {count} lines with {parts:?} within {within:?}; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// Send SIGTERM, as a supervisor stopping the process does.
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Wait until the process has exited and its last lines of standard error are in the log
    /// (the collecting thread reads them after the exit, until the pipe closes); its status.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited on")
                && self.collector.is_finished()
            {
                return status;
            }
            let log = self.log.lock().expect("not poisoned").join("\n");
            assert!(
                started.elapsed() < within,
                "still running after {within:?}; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small HTTP client for the frontend.
pub(crate) struct Frontend {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Frontend {
    pub(crate) fn new(port: u16) -> Self {
        Frontend {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> hyper::Response<Incoming> {
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a request");
        self.http
            .request(request)
            .await
            .expect("the frontend answers")
    }

    /// A completion's status and JSON body.
    pub(crate) async fn complete(&self, prompt: &str, max_tokens: u32) -> (u16, Value) {
        let body = json!({ "model": "smollm2", "prompt": prompt, "max_tokens": max_tokens });
        self.complete_with(&body).await
    }

    /// The status and JSON body of the completion `body` asks for.
    pub(crate) async fn complete_with(&self, body: &Value) -> (u16, Value) {
        self.post_json("/v1/completions", body).await
    }

    /// The status and JSON body of the answer to `body` posted to `path`.
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        (status, json_body(response).await)
    }

    /// The status and JSON body of `GET path`.
    pub(crate) async fn get_json(&self, path: &str) -> (u16, Value) {
        let request = hyper::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = self
            .http
            .request(request)
            .await
            .expect("the frontend answers");
        let status = response.status().as_u16();
        (status, json_body(response).await)
    }

    /// The token ids of `prompt` (`/tokenize` of `body`: a prompt or messages).
    pub(crate) async fn tokenize(&self, body: &Value) -> Vec<u32> {
        let (status, answer) = self.post_json("/tokenize", body).await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_value(answer["tokens"].clone()).expect("token ids")
    }

    /// The text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let request = hyper::Request::get(format!("{}/metrics", self.base))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = self.http.request(request).await.expect("metrics");
        String::from_utf8_lossy(&body_bytes(response).await).into_owned()
    }

    /// Poll `/metrics` until `holds` says yes of its text (or fail after `within`, naming
    /// `what`); that text.
    pub(crate) async fn wait_for_metrics(
        &self,
        what: &str,
        within: Duration,
        holds: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics().await;
            if holds(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the frontend answers.
    pub(crate) async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let request = hyper::Request::get(format!("{}/v1/models", self.base))
                .body(Full::new(Bytes::new()))
                .expect("a request");
            if let Ok(response) = self.http.request(request).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the frontend never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A response's body read whole.
async fn body_bytes(response: hyper::Response<Incoming>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
}

/// A response's body read whole as JSON.
pub(crate) async fn json_body(response: hyper::Response<Incoming>) -> Value {
    serde_json::from_slice(&body_bytes(response).await).expect("JSON")
}

/// A frontend routing with `--router kv` over the engine servers `engines` (each an
/// `--engine-at` value), once it answers.
pub(crate) async fn engine_frontend(engines: &[String]) -> (Process, Frontend) {
    engine_frontend_routed(engines, "kv").await
}

/// A frontend routing with `router` over the engine servers `engines` (each an `--engine-at`
/// value), once it answers.
pub(crate) async fn engine_frontend_routed(
    engines: &[String],
    router: &str,
) -> (Process, Frontend) {
    engine_frontend_with(engines, router, &[]).await
}

/// [`engine_frontend_routed`] with more flags.
pub(crate) async fn engine_frontend_with(
    engines: &[String],
    router: &str,
    flags: &[&str],
) -> (Process, Frontend) {
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["frontend", "--port", &port, "--router", router];
    for engine in engines {
        args.extend(["--engine-at", engine.as_str()]);
    }
    args.extend_from_slice(flags);
    let process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    (process, frontend)
}

/// A frontend over the workers registered in `registry`, routing without KV events, once it
/// answers.
pub(crate) async fn directory_frontend(registry: &str) -> (Process, Frontend) {
    directory_frontend_with(registry, &[]).await
}

/// [`directory_frontend`] with more flags.
pub(crate) async fn directory_frontend_with(registry: &str, flags: &[&str]) -> (Process, Frontend) {
    let mut all = vec!["--registry", registry];
    all.extend_from_slice(flags);
    frontend_with_env(&all, &[]).await
}

/// A frontend (approximate KV routing) on a free port with `flags` (its discovery among them)
/// and `env`, once it serves.
pub(crate) async fn frontend_with_env(flags: &[&str], env: &[(&str, &str)]) -> (Process, Frontend) {
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["frontend", "--port", &port, "--router", "approx-kv"];
    args.extend_from_slice(flags);
    let process = Process::start_with_env(&args, env);
    let port = port.parse().expect("a port");
    let frontend = Frontend::new(port);
    frontend.wait_ready().await;
    (process, frontend)
}

/// Three streams of 256-token prompts and `max_tokens` tokens each, open: they fill a 64-block
/// KV cache as they decode.
pub(crate) async fn fill_kv_cache(
    frontend: &Frontend,
    max_tokens: u64,
) -> Vec<hyper::Response<Incoming>> {
    let bodies = [314, 271, 161].map(|token| {
        json!({
            "model": "smollm2", "prompt": vec![token; 256], "max_tokens": max_tokens,
            "stream": true,
        })
    });
    let posts = bodies
        .iter()
        .map(|body| frontend.post("/v1/completions", body));
    let streams = futures::future::join_all(posts).await;
    assert!(streams.iter().all(|s| s.status().as_u16() == 200));
    streams
}

/// A frontend over the workers registered in `registry`, with `flags`, once workers 1 and 2
/// have joined it.
pub(crate) async fn joined_frontend(registry: &str, flags: &[&str]) -> (Process, Frontend) {
    let (process, frontend) = directory_frontend_with(registry, flags).await;
    for joined in ["worker 1/0 at", "worker 2/0 at"] {
        process.wait_for(joined, Duration::from_secs(120)).await;
    }
    (process, frontend)
}

/// The reference of the split deployments: the single process with one aggregated candle
/// worker (not yet waited for: `wait_ready` on its frontend).
pub(crate) fn aggregated_reference() -> (Process, Frontend) {
    let port = free_port().expect("a free port");
    let process = Process::start(&["--port", &port.to_string(), "--workers", "1"]);
    (process, Frontend::new(port))
}

/// Read a stream to its end (or for `within`); its text.
pub(crate) async fn read_stream(mut body: Incoming, within: Duration) -> String {
    let mut text = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
            }
        }
    })
    .await;
    text
}

/// The text, the usage and the number of errors of a streamed completion's server-sent
/// events, and whether they end with `[DONE]`.
pub(crate) fn streamed_completion(events: &str) -> (String, Value, usize, bool) {
    let (mut text, mut usage, mut errors, mut done) = (String::new(), Value::Null, 0, false);
    for data in events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
    {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let event: Value = serde_json::from_str(data).expect("a JSON event");
        errors += usize::from(event.get("error").is_some());
        text.push_str(event["choices"][0]["text"].as_str().unwrap_or_default());
        if !event["usage"].is_null() {
            usage = event["usage"].clone();
        }
    }
    (text, usage, errors, done)
}

/// Start the streamed completion `body` asks for; its body and first events.
pub(crate) async fn first_events(frontend: &Frontend, body: &Value) -> (Incoming, String) {
    let response = frontend.post("/v1/completions", body).await;
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.into_body();
    let first = stream.frame().await.expect("a chunk").expect("readable");
    let events = String::from_utf8_lossy(first.data_ref().expect("data")).into_owned();
    (stream, events)
}

/// The routing decisions `/metrics` counts for worker `id`.
pub(crate) fn decisions(metrics: &str, id: u64) -> u64 {
    let worker = format!("worker=\"{id}/0\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("dynamo_router_decisions_total{") && line.contains(&worker))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Write `name.pem` and `name.key` into `dir`: a certificate from `authority` naming `names`, and
/// its key; their paths.
pub(crate) fn issue(
    authority: &LocalAuthority,
    dir: &std::path::Path,
    name: &str,
    names: &[&str],
) -> [String; 2] {
    let identity = authority.issue(names).expect("a certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, identity.cert).expect("written");
    std::fs::write(&key, identity.key).expect("written");
    [cert, key].map(|path| path.display().to_string())
}

/// The prompt tokens a completion's usage says were found cached.
pub(crate) fn cached_tokens(body: &Value) -> u64 {
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
}

/// A prompt of a few hundred tokens that no other call shares a block with.
pub(crate) fn long_prompt(tag: &str) -> String {
    (0..100).map(|i| format!("{tag}{i} ")).collect()
}

/// The records in the registry `directory`.
pub(crate) fn registered(directory: &std::path::Path) -> usize {
    std::fs::read_dir(directory).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

/// `dynamo-serve worker --engine ENGINE --id ID --registry REGISTRY` with `flags`.
pub(crate) fn registry_worker(engine: &str, id: u64, registry: &str, flags: &[&str]) -> Process {
    let id = id.to_string();
    let mut args = vec![
        "worker",
        "--engine",
        engine,
        "--id",
        &id,
        "--registry",
        registry,
    ];
    args.extend_from_slice(flags);
    Process::start(&args)
}

/// Greedy completions of prompts from shorter than a KV block to several blocks with a
/// partial last one.
pub(crate) const GREEDY_PROMPTS: [&str; 3] = [
    "The capital of France is",
    "A hash table stores keys in buckets. When two keys land in the same bucket, the table \
     resolves the collision by",
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light \
     into chemical energy. It takes place in the chloroplasts, which hold chlorophyll, the \
     pigment that absorbs red and blue light. The first stage, the light reactions,",
];

/// The text of a greedy completion of `prompt`, 12 tokens at most.
pub(crate) async fn greedy_text(frontend: &Frontend, prompt: &str) -> String {
    let body = json!({ "model": "smollm2", "prompt": prompt, "max_tokens": 12, "temperature": 0 });
    let (status, body) = frontend.complete_with(&body).await;
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["text"]
        .as_str()
        .expect("a text")
        .to_owned()
}

/// The greedy completions of [`GREEDY_PROMPTS`], one after the other.
pub(crate) async fn greedy_texts(frontend: &Frontend) -> Vec<String> {
    let mut texts = Vec::new();
    for prompt in GREEDY_PROMPTS {
        texts.push(greedy_text(frontend, prompt).await);
    }
    texts
}

/// The requests `/metrics` counts as placed `placement` by a disaggregated router
/// (`dynamo_disagg_requests_total`).
pub(crate) fn placed(metrics: &str, placement: &str) -> u64 {
    let label = format!("dynamo_disagg_requests_total{{placement=\"{placement}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&label)?.parse().ok())
        .unwrap_or(0)
}

/// Wait until `check` holds, asking again every few milliseconds; panics naming `what` when it
/// has not held within `within` (a check still running then is dropped).
pub(crate) async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let holds = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(within, holds).await.is_err() {
        panic!("never within {within:?}: {what}");
    }
}

/// The value of `name`'s series for `worker` in the Prometheus text `metrics`, if there is one.
pub(crate) fn series_value(metrics: &str, name: &str, worker: &str) -> Option<f64> {
    let (series, label) = (format!("{name}{{"), format!("worker=\"{worker}\""));
    metrics
        .lines()
        .find(|line| line.starts_with(&series) && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}
