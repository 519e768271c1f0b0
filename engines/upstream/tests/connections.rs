//! The client's connections: an answer read to its end leaves its connection for the next
//! request (streamed answers too, whose reader stops at `[DONE]`), a pooled connection the
//! server has closed while idle is not used again, and a request on a pooled connection that
//! the server closes without an answer goes on a new one.

#[path = "support/http_request.rs"]
mod http_request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dynamo_core::{Delivery, EngineExt, GenerateRequest};
use dynamo_upstream::{
    CompletionsEngine, Dialect, Extensions, HttpClient, HttpConfig, OutputTokens,
};
use http_request::read_request;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const EVENTS: [&str; 4] = [
    r#"{"choices":[{"index":0,"text":" a","finish_reason":null,"token_ids":[7]}],"usage":null}"#,
    r#"{"choices":[{"index":0,"text":" b","finish_reason":"length","token_ids":[8]}],"usage":null}"#,
    r#"{"choices":[],"usage":{"prompt_tokens":2,"total_tokens":4,"completion_tokens":2}}"#,
    "[DONE]",
];

const WHOLE: &str = r#"{"choices":[{"index":0,"text":" a b","finish_reason":"length","token_ids":[7,8]}],"usage":{"prompt_tokens":2,"total_tokens":4,"completion_tokens":2}}"#;

/// When the test server closes a connection.
#[derive(Debug, Clone, Copy)]
enum Closes {
    Never,
    /// After its first answer.
    AfterAnswer,
    /// When its second request has arrived, without answering it: the race between a server
    /// closing a kept-alive connection and the client's next request on it.
    OnSecondRequest,
}

/// A server answering every completion, streamed (one event an HTTP chunk, each its own
/// write) or whole as the request asks; it counts the connections it accepts, and closes them
/// as `closes` says.
struct Server {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Notified when the server has closed a connection after its answer.
    closed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(closes: Closes) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("bound");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(Notify::new());
        let (count, notify) = (Arc::clone(&accepted), Arc::clone(&closed));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let notify = Arc::clone(&notify);
                connections.spawn(serve(socket, closes, notify));
            }
        });
        Server {
            address,
            accepted,
            closed,
            task,
        }
    }

    fn engine(&self) -> CompletionsEngine {
        let client = HttpClient::new(&format!("http://{}", self.address), HttpConfig::default())
            .expect("a URL");
        let dialect = Dialect::openai()
            .extensions(Extensions::VLLM)
            .output(OutputTokens::TokenIdsField);
        CompletionsEngine::new(client, dialect)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut socket: TcpStream, closes: Closes, closed: Arc<Notify>) {
    let mut requests = 0;
    while let Some((_, body)) = read_request(&mut socket).await {
        requests += 1;
        if matches!(closes, Closes::OnSecondRequest) && requests == 2 {
            return;
        }
        let streamed = String::from_utf8_lossy(&body).contains(r#""stream":true"#);
        let written = if streamed {
            stream(&mut socket).await
        } else {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                WHOLE.len()
            );
            socket.write_all(format!("{head}{WHOLE}").as_bytes()).await
        };
        if written.is_err() {
            return;
        }
        if matches!(closes, Closes::AfterAnswer) {
            drop(socket);
            closed.notify_one();
            return;
        }
    }
}

async fn stream(socket: &mut TcpStream) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await?;
    for event in EVENTS {
        let event = format!("data: {event}\n\n");
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        socket.write_all(chunk.as_bytes()).await?;
    }
    socket.write_all(b"0\r\n\r\n").await
}

fn request(delivery: Delivery) -> GenerateRequest {
    let mut request = GenerateRequest::new("r", "m", vec![1, 2]).with_max_tokens(2);
    request.delivery = delivery;
    request
}

async fn answer(engine: &mut CompletionsEngine, delivery: Delivery) -> Vec<u32> {
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        engine.generate_all(request(delivery)),
    )
    .await
    .expect("an answer in time")
    .expect("an answer");
    answer.tokens
}

#[tokio::test]
async fn answers_read_to_their_end_leave_their_connection_for_the_next_request() {
    let server = Server::start(Closes::Never).await;
    let mut engine = server.engine();
    for delivery in [
        Delivery::Streamed,
        Delivery::Whole,
        Delivery::Streamed,
        Delivery::Whole,
    ] {
        assert_eq!(answer(&mut engine, delivery).await, [7, 8], "{delivery:?}");
    }
    assert_eq!(
        server.accepted(),
        1,
        "one connection for every request in turn"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
    let server = Server::start(Closes::AfterAnswer).await;
    let mut engine = server.engine();
    for (n, delivery) in [Delivery::Streamed, Delivery::Whole, Delivery::Streamed]
        .into_iter()
        .enumerate()
    {
        let closed = server.closed.notified();
        assert_eq!(answer(&mut engine, delivery).await, [7, 8], "{delivery:?}");
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the server closes the connection");
        assert_eq!(server.accepted(), n + 1);
    }
}

#[tokio::test]
async fn a_request_on_a_connection_closed_without_an_answer_goes_on_a_new_one() {
    let server = Server::start(Closes::OnSecondRequest).await;
    let mut engine = server.engine();
    for (n, delivery) in [Delivery::Streamed, Delivery::Whole, Delivery::Streamed]
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer(&mut engine, delivery).await, [7, 8], "{delivery:?}");
        // The first request opens a connection; each later one finds the pooled connection
        // closed under it and is answered as the first request of a new one.
        assert_eq!(server.accepted(), n + 1);
    }
}
