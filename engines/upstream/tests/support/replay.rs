//! A test server that replays fixture files byte for byte.
//!
//! A fixture is an HTTP response head (status line and headers, one a line), a blank line, and
//! the body. Heads are sent with CRLF line ends. A chunked body is sent one server-sent event
//! per HTTP chunk, as uvicorn and axum write a stream; a line `#CUT` in it sends what follows
//! as a chunk that announces more bytes than it has, then closes the connection (a stream cut
//! mid-chunk). Any other body is sent with its `content-length`. A line `#HOLD` sends what came
//! before and then keeps the connection open until the client closes it.

#![allow(dead_code, reason = "each test binary uses part of the replay server")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[path = "http_request.rs"]
mod http_request;
use http_request::read_request_head;

/// What the server received and saw.
#[derive(Default)]
pub(crate) struct Seen {
    /// Each request: method and path, and its body.
    pub(crate) requests: Mutex<Vec<(String, Vec<u8>)>>,
    /// Each request's headers, one `name: value` a line, as sent.
    pub(crate) headers: Mutex<Vec<String>>,
    /// Notified when a held connection is closed by the client.
    pub(crate) closed: Notify,
}

/// A running replay server; stops when dropped.
pub(crate) struct Replay {
    pub(crate) address: SocketAddr,
    pub(crate) seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replay {
    /// Serve `routes`: request path → fixture bytes.
    pub(crate) async fn start(routes: HashMap<String, Vec<u8>>) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let seen = Arc::new(Seen::default());
        let routes = Arc::new(routes);
        let shared = Arc::clone(&seen);
        // Connections live in the accept task's set: stopping the server closes them all.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.spawn(serve(socket, Arc::clone(&routes), Arc::clone(&shared)));
            }
        });
        Replay {
            address,
            seen,
            task,
        }
    }

    /// Serve one fixture on `path`.
    pub(crate) async fn one(path: &str, fixture: &str) -> Replay {
        Replay::start(HashMap::from([(path.to_owned(), fixture_bytes(fixture))])).await
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The body of the `n`th request, byte for byte, as text.
    pub(crate) fn request_text(&self, n: usize) -> String {
        let requests = self.seen.requests.lock().expect("not poisoned");
        String::from_utf8(requests[n].1.clone()).expect("a UTF-8 request body")
    }

    /// How many requests' request lines start with `request` (`"POST /v1/completions"`).
    pub(crate) fn requests_to(&self, request: &str) -> usize {
        let requests = self.seen.requests.lock().expect("not poisoned");
        requests
            .iter()
            .filter(|(line, _)| line.starts_with(request))
            .count()
    }

    /// The value of header `name` (any case) in each request whose request line starts with
    /// `request` (`"POST /v1/completions"`), in order.
    pub(crate) fn header_of_each(&self, request: &str, name: &str) -> Vec<Option<String>> {
        let requests = self.seen.requests.lock().expect("not poisoned");
        let headers = self.seen.headers.lock().expect("not poisoned");
        let value = |head: &String| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        requests
            .iter()
            .zip(headers.iter())
            .filter(|((line, _), _)| line.starts_with(request))
            .map(|(_, head)| value(head))
            .collect()
    }

    /// The JSON body of the `n`th request.
    pub(crate) fn request_json(&self, n: usize) -> serde_json::Value {
        let requests = self.seen.requests.lock().expect("not poisoned");
        serde_json::from_slice(&requests[n].1).expect("a JSON request body")
    }
}

/// The folder of the package whose test is running, as cargo tells the running test (it sets
/// `CARGO_MANIFEST_DIR` when it runs a test as well as when it builds one), else as it was at
/// build time. A test binary that cargo reuses from a target folder shared with another
/// checkout of the same sources then reads this checkout's files, not the other's (which may
/// be gone).
pub(crate) fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The bytes of `tests/fixtures/<name>` of the crate under test.
pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = package_dir().join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

async fn serve(mut socket: TcpStream, routes: Arc<HashMap<String, Vec<u8>>>, seen: Arc<Seen>) {
    loop {
        let Some((head, body)) = read_request_head(&mut socket).await else {
            return;
        };
        let (target, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        let target = target.to_owned();
        seen.headers
            .lock()
            .expect("not poisoned")
            .push(headers.trim_end().to_owned());
        let path = target.split_whitespace().nth(1).unwrap_or("").to_owned();
        seen.requests
            .lock()
            .expect("not poisoned")
            .push((target.clone(), body));
        let Some(fixture) = routes.get(&path) else {
            let _ = socket
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await;
            continue;
        };
        if !send(&mut socket, fixture, &seen).await {
            return;
        }
    }
}

/// Write one fixture; whether the connection stays usable.
async fn send(socket: &mut TcpStream, fixture: &[u8], seen: &Seen) -> bool {
    let text = String::from_utf8_lossy(fixture);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut out = String::new();
    for line in head.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !chunked {
        out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        out.push_str(body);
        return socket.write_all(out.as_bytes()).await.is_ok();
    }
    out.push_str("\r\n");
    let (whole, cut) = match body.split_once("#CUT\n") {
        Some((whole, cut)) => (whole, Some(cut)),
        None => (body, None),
    };
    let (whole, hold) = match whole.split_once("#HOLD\n") {
        Some((whole, _)) => (whole, true),
        None => (whole, false),
    };
    let mut events: Vec<&str> = whole.split_inclusive("\n\n").collect();
    events.retain(|event| !event.is_empty());
    if socket.write_all(out.as_bytes()).await.is_err() {
        return false;
    }
    for event in events {
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            return false;
        }
        socket.flush().await.ok();
        tokio::task::yield_now().await;
    }
    if let Some(cut) = cut {
        let chunk = format!("{:x}\r\n{cut}", cut.len() + 100);
        let _ = socket.write_all(chunk.as_bytes()).await;
        let _ = socket.shutdown().await;
        return false;
    }
    if hold {
        let mut buffer = [0u8; 1024];
        while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
        seen.closed.notify_one();
        return false;
    }
    socket.write_all(b"0\r\n\r\n").await.is_ok()
}
