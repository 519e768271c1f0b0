//! A deadline set by the caller crosses the TCP request plane: the worker is told the time left,
//! and when the deadline passes the caller's stream ends with a timeout and the worker's
//! generation is cancelled.

use std::time::Duration;

use dynamo_core::layers::DeadlineLayer;
use dynamo_core::{EchoEngine, EngineExt, ErrorClass, GenerateRequest};
use dynamo_transport::tcp::{RemoteEngine, ServeConfig, serve};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_cancels_the_remote_generation() {
    let (seen, mut timeouts) = mpsc::channel(8);
    let (cancelled, mut cancellations) = mpsc::channel(8);
    // The worker's engine: a slow echo that reports the timeout it was given and its
    // cancellation.
    let engine = tower::service_fn(move |request: GenerateRequest| {
        let token = request.cancellation().clone();
        let (seen, cancelled) = (seen.clone(), cancelled.clone());
        let timeout = request.timeout;
        tokio::spawn(async move {
            let _ = seen.send(timeout).await;
            token.cancelled().await;
            let _ = cancelled.send(()).await;
        });
        EchoEngine::new()
            .with_token_delay(Duration::from_millis(20))
            .oneshot(request)
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    let server = tokio::spawn(serve(listener, engine, ServeConfig::default()));
    let remote = RemoteEngine::connect(address).await.expect("connected");
    let mut engine = DeadlineLayer::new().layer(remote);

    let timeout = Duration::from_millis(300);
    let prompt: Vec<u32> = (0..200).collect();
    let request = GenerateRequest::new("r1", "echo", prompt)
        .with_max_tokens(200)
        .with_timeout(timeout);
    let mut stream = engine.generate(request).await.expect("a stream");
    let mut tokens = 0;
    let error = loop {
        match stream.next().await.expect("no end before the deadline") {
            Ok(chunk) => tokens += chunk.tokens.len(),
            Err(error) => break error,
        }
    };
    assert_eq!(error.class(), ErrorClass::Timeout, "{error}");
    assert!(
        tokens < 200,
        "the deadline ended the stream early ({tokens} tokens)"
    );

    let told = timeouts.recv().await.expect("the worker saw the request");
    assert_eq!(told, Some(timeout), "the worker is told the time left");
    tokio::time::timeout(Duration::from_secs(10), cancellations.recv())
        .await
        .expect("the worker's engine saw the cancellation within 10 s")
        .expect("the server runs");
    server.abort();
}
