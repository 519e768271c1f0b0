//! The TCP request plane end to end on loopback: concurrent streams, cancellation reaching the
//! server's engine, a lost connection, and bad frames that leave the other streams alone.

use std::time::Duration;

use dynamo_core::{EchoEngine, EngineExt, ErrorClass, GenerateRequest};
use dynamo_transport::tcp::{Frame, RemoteEngine, ServeConfig, serve, serve_with_shutdown};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    (listener, address)
}

fn request(id: usize, len: u32, max_tokens: u32) -> GenerateRequest {
    let prompt: Vec<u32> = (0..len).map(|t| t + id as u32 * 1000).collect();
    GenerateRequest::new(format!("r{id}"), "echo", prompt).with_max_tokens(max_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_come_back_whole_and_unmixed() {
    let (listener, address) = listener().await;
    let server = tokio::spawn(serve(listener, EchoEngine::new(), ServeConfig::default()));
    let remote = RemoteEngine::connect(address).await.expect("connected");
    let answers = futures::future::join_all((0..32).map(|id| {
        let mut remote = remote.clone();
        async move {
            remote
                .generate_all(request(id, 40, 30))
                .await
                .expect("an answer")
        }
    }))
    .await;
    for (id, answer) in answers.iter().enumerate() {
        let local = EchoEngine::new()
            .generate_all(request(id, 40, 30))
            .await
            .expect("local");
        assert_eq!(answer.tokens, local.tokens, "stream {id}");
        assert_eq!(answer.finish_reason, local.finish_reason);
        assert_eq!(answer.usage, local.usage);
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_the_remote_generation() {
    let (cancelled, mut cancellations) = mpsc::channel(8);
    // The server's engine: a slow echo that reports the requests whose token fires.
    let engine = tower::service_fn(move |request: GenerateRequest| {
        let token = request.cancellation().clone();
        let id = request.id.clone();
        let cancelled = cancelled.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            let _ = cancelled.send(id).await;
        });
        EchoEngine::new()
            .with_token_delay(Duration::from_millis(20))
            .oneshot(request)
    });
    let (listener, address) = listener().await;
    let server = tokio::spawn(serve(listener, engine, ServeConfig::default()));
    let mut remote = RemoteEngine::connect(address).await.expect("connected");
    let mut stream = remote
        .generate(request(1, 200, 200))
        .await
        .expect("a stream");
    for _ in 0..2 {
        stream.next().await.expect("a chunk").expect("a token");
    }
    drop(stream);
    let id = tokio::time::timeout(Duration::from_secs(10), cancellations.recv())
        .await
        .expect("the server's engine saw the cancellation within 10 s")
        .expect("the server runs");
    assert_eq!(id.as_str(), "r1");
    // The connection still serves other streams.
    let answer = remote
        .generate_all(request(2, 3, 3))
        .await
        .expect("an answer");
    assert_eq!(answer.tokens.len(), 3);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_ends_every_stream_as_unavailable() {
    let engine = EchoEngine::new().with_token_delay(Duration::from_millis(20));
    let (listener, address) = listener().await;
    let server = tokio::spawn(serve(listener, engine, ServeConfig::default()));
    let mut remote = RemoteEngine::connect(address).await.expect("connected");
    let mut streams = Vec::new();
    for id in 0..3 {
        streams.push(
            remote
                .generate(request(id, 100, 100))
                .await
                .expect("a stream"),
        );
    }
    for stream in &mut streams {
        stream.next().await.expect("a chunk").expect("a token");
    }
    server.abort();
    for mut stream in streams {
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(error)) => break error,
                None => panic!("the stream ended without an error"),
            }
        };
        assert_eq!(error.class(), ErrorClass::Unavailable, "{error}");
    }
    let later = remote
        .generate_all(request(9, 3, 3))
        .await
        .expect_err("no connection");
    assert_eq!(later.class(), ErrorClass::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_open_streams_refuses_new_ones_and_then_ends() {
    let engine = EchoEngine::new().with_token_delay(Duration::from_millis(10));
    let (listener, address) = listener().await;
    let shutdown = CancellationToken::new();
    let config = ServeConfig::default();
    let server = tokio::spawn(serve_with_shutdown(
        listener,
        engine,
        config,
        shutdown.clone(),
    ));
    let mut remote = RemoteEngine::connect(address).await.expect("connected");
    let mut open = remote.generate(request(1, 30, 30)).await.expect("a stream");
    let first = open.next().await.expect("a chunk").expect("a token");
    shutdown.cancel();
    let refused = remote
        .generate_all(request(2, 3, 3))
        .await
        .expect_err("refused while draining");
    assert_eq!(refused.class(), ErrorClass::Unavailable, "{refused}");
    let mut tokens = first.tokens.len();
    let mut finished = false;
    while let Some(chunk) = open.next().await {
        let chunk = chunk.expect("the open stream runs to its end");
        tokens += chunk.tokens.len();
        finished |= chunk.is_final();
    }
    assert!(finished, "the open stream got its final chunk");
    assert_eq!(tokens, 30);
    let ended = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serving ends once its streams have")
        .expect("no panic");
    assert!(ended.is_ok(), "{ended:?}");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

/// Frames as a raw client writes them.
async fn write_raw(socket: &mut TcpStream, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("small");
    socket
        .write_all(&length.to_be_bytes())
        .await
        .expect("written");
    socket.write_all(payload).await.expect("written");
}

async fn read_raw(socket: &mut TcpStream) -> serde_json::Value {
    let mut length = [0u8; 4];
    socket.read_exact(&mut length).await.expect("a frame");
    let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
    socket.read_exact(&mut payload).await.expect("a frame");
    serde_json::from_slice(&payload).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_an_error_and_the_connection_goes_on() {
    let config = ServeConfig {
        max_frame: 4096,
        ..ServeConfig::default()
    };
    let (listener, address) = listener().await;
    let server = tokio::spawn(serve(listener, EchoEngine::new(), config));
    let mut socket = TcpStream::connect(address).await.expect("connected");

    write_raw(&mut socket, b"{not json").await;
    let reply = read_raw(&mut socket).await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["stream"], 0);
    assert_eq!(reply["error"]["class"], "invalid_request");

    write_raw(&mut socket, &vec![b' '; 10_000]).await;
    let reply = read_raw(&mut socket).await;
    assert_eq!(reply["error"]["class"], "invalid_request");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("over the limit")),
        "{reply}"
    );

    let frame = Frame::Request {
        stream: 5,
        request: Box::new(request(0, 2, 2)),
    };
    write_raw(&mut socket, &serde_json::to_vec(&frame).expect("JSON")).await;
    let mut tokens = 0;
    loop {
        let reply = read_raw(&mut socket).await;
        assert_eq!(reply["type"], "chunk", "{reply}");
        assert_eq!(reply["stream"], 5);
        if reply["chunk"]["finish_reason"].is_null() {
            tokens += 1;
        } else {
            break;
        }
    }
    assert_eq!(tokens, 2);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_spreads_streams_and_closes_when_dropped_after_its_streams() {
    let (served, address) = listener().await;
    let server = tokio::spawn(serve(served, EchoEngine::new(), ServeConfig::default()));
    let remote = RemoteEngine::connect_pooled(address, 3)
        .await
        .expect("connected");
    let answers = futures::future::join_all((0..12).map(|id| {
        let mut remote = remote.clone();
        async move { remote.generate_all(request(id, 8, 8)).await }
    }))
    .await;
    assert!(answers.iter().all(Result::is_ok));
    server.abort();

    // A bare listener shows when the client closes its connections.
    let (bare, address) = listener().await;
    let mut remote = RemoteEngine::connect_pooled(address, 2)
        .await
        .expect("connected");
    let mut sockets = Vec::new();
    for _ in 0..2 {
        sockets.push(bare.accept().await.expect("accepted").0);
    }
    let open_stream = remote.generate(request(0, 4, 4)).await.expect("a stream");
    drop(remote);
    // The open stream keeps the connections: reading them does not reach their end. An
    // absence can only be watched for a while; the fixed window is the point.
    let mut received = Vec::new();
    for socket in &mut sockets {
        let open = tokio::time::timeout(
            Duration::from_millis(200),
            socket.read_to_end(&mut received),
        )
        .await;
        assert!(open.is_err(), "a connection closed while a stream was open");
    }
    drop(open_stream);
    for socket in &mut sockets {
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "the connection closes: {closed:?}"
        );
    }
}

/// A request for several choices crosses the wire with its `n`, and every choice's chunks come
/// back: a choice's finish (with others still running) does not end the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_choice_of_a_forked_request_comes_back() {
    use dynamo_core::{FinishReason, TokenChunk, TokenStream};
    let engine = tower::service_fn(|request: GenerateRequest| async move {
        let n = request.n;
        let mut chunks = Vec::new();
        for index in 0..n {
            chunks.push(Ok(TokenChunk {
                index,
                ..TokenChunk::token(100 + index)
            }));
        }
        for index in 0..n {
            chunks.push(Ok(TokenChunk {
                index,
                more_choices: index + 1 < n,
                ..TokenChunk::finish(FinishReason::Stop, None)
            }));
        }
        Ok::<_, dynamo_core::Error>(TokenStream::from_chunks(chunks))
    });
    let (listener, address) = listener().await;
    let server = tokio::spawn(serve(listener, engine, ServeConfig::default()));
    let remote = RemoteEngine::connect(address).await.expect("connected");
    let stream = remote
        .oneshot(request(1, 4, 4).with_n(3))
        .await
        .expect("a stream");
    let chunks: Vec<TokenChunk> = stream.map(|chunk| chunk.expect("a chunk")).collect().await;
    let tokens: Vec<(u32, Vec<u32>)> = chunks
        .iter()
        .filter(|c| !c.tokens.is_empty())
        .map(|c| (c.index, c.tokens.clone()))
        .collect();
    assert_eq!(tokens, [(0, vec![100]), (1, vec![101]), (2, vec![102])]);
    let finishes: Vec<u32> = chunks
        .iter()
        .filter(|c| c.ends_choice())
        .map(|c| c.index)
        .collect();
    assert_eq!(finishes, [0, 1, 2], "{chunks:?}");
    assert!(chunks.last().expect("chunks").is_final());
    server.abort();
}
