//! A stand-in for `trtllm-serve`: fixed answers on some paths (a completion, the iteration
//! statistics) and, on `POST /kv_cache_events`, the answers queued with
//! [`StandIn::push_events`] one per request, then `[]` (an empty buffer), as the server drains
//! its event buffer at each request.
//!
//! Answers are fixture files (`tests/fixtures/*.http`: a status line and headers, a blank line,
//! the body), sent with CRLF heads and a `content-length`.

#![allow(dead_code, reason = "each test binary uses part of the stand-in")]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[path = "../../../upstream/tests/support/http_request.rs"]
mod http_request;
use http_request::read_request;

/// The answer of a server whose event buffer is empty.
const NO_EVENTS: &[u8] = b"HTTP/1.1 200 OK\nserver: uvicorn\ncontent-type: application/json\n\n[]";

#[derive(Default)]
struct State {
    /// Each request's line (`POST /v1/completions HTTP/1.1`).
    requests: Vec<String>,
    /// Answers of the next `/kv_cache_events` requests.
    events: VecDeque<Vec<u8>>,
}

/// A running stand-in; stops when dropped.
pub(crate) struct StandIn {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Serve `routes` (path → fixture bytes) and the queued KV events.
    pub(crate) async fn start(routes: HashMap<String, Vec<u8>>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let state = Arc::new(Mutex::new(State::default()));
        let routes = Arc::new(routes);
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.spawn(serve(socket, Arc::clone(&routes), Arc::clone(&shared)));
            }
        });
        StandIn {
            address,
            state,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Answer the next `POST /kv_cache_events` not yet answered with `fixture`.
    pub(crate) fn push_events(&self, fixture: Vec<u8>) {
        let mut state = self.state.lock().expect("not poisoned");
        state.events.push_back(fixture);
    }

    /// Queued event answers not yet sent.
    pub(crate) fn pending_events(&self) -> usize {
        self.state.lock().expect("not poisoned").events.len()
    }

    /// How many requests began with `line` (`POST /v1/completions`).
    pub(crate) fn count(&self, line: &str) -> usize {
        let state = self.state.lock().expect("not poisoned");
        state
            .requests
            .iter()
            .filter(|r| r.starts_with(line))
            .count()
    }
}

/// The bytes of `engines/trtllm/tests/fixtures/<name>`, from this crate's tests or another
/// workspace member's (which include this file).
pub(crate) fn trtllm_fixture(name: &str) -> Vec<u8> {
    // Read when the test runs, as `package_dir` in the upstream adapter's `replay.rs` does.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let fixtures = if manifest.ends_with("engines/trtllm") {
        manifest.join("tests/fixtures")
    } else {
        manifest.join("../engines/trtllm/tests/fixtures")
    };
    let path = fixtures.join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A fixture's body (what follows the blank line after its head).
pub(crate) fn fixture_body(fixture: &[u8]) -> &[u8] {
    let at = fixture
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a head and a body");
    &fixture[at + 2..]
}

/// An answer of `POST /kv_cache_events` with `body` (a JSON list), as uvicorn sends it.
pub(crate) fn events_answer(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\nserver: uvicorn\ncontent-type: application/json\n\n{body}")
        .into_bytes()
}

async fn serve(
    mut socket: TcpStream,
    routes: Arc<HashMap<String, Vec<u8>>>,
    state: Arc<Mutex<State>>,
) {
    while let Some((line, _body)) = read_request(&mut socket).await {
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let answer = {
            let mut state = state.lock().expect("not poisoned");
            state.requests.push(line);
            if path == "/kv_cache_events" {
                Some(
                    state
                        .events
                        .pop_front()
                        .unwrap_or_else(|| NO_EVENTS.to_vec()),
                )
            } else {
                routes.get(&path).cloned()
            }
        };
        let written = match answer {
            Some(fixture) => socket.write_all(&http(&fixture)).await,
            None => {
                socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// A fixture as bytes on the wire: CRLF head lines, a `content-length`, the body.
fn http(fixture: &[u8]) -> Vec<u8> {
    let body = fixture_body(fixture);
    let head = String::from_utf8_lossy(&fixture[..fixture.len() - body.len() - 2]);
    let mut out = String::new();
    for line in head.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
