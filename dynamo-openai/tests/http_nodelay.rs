//! Each streamed chunk leaves the gateway at once: the connections the gateway's listener
//! accepts have `TCP_NODELAY` set. With Nagle's algorithm on, a small write waits for the
//! acknowledgement of the one before, which the client delays by up to 40 ms, so every streamed
//! answer took about 44 ms (`docs/reliability.md`).

#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected shapes")]

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};

/// The server side of one connection accepted by `listener`.
async fn accept_one<L: Listener<Io = TcpStream>>(
    mut listener: L,
    address: std::net::SocketAddr,
) -> TcpStream {
    let (accepted, client) = tokio::join!(listener.accept(), TcpStream::connect(address));
    client.unwrap();
    accepted.0
}

#[tokio::test]
async fn accepted_connections_have_tcp_nodelay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = accept_one(dynamo_openai::no_delay(listener), address).await;
    assert!(accepted.nodelay().unwrap());

    // Without it the kernel's default (Nagle on) stays: the check above can fail.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = plain.local_addr().unwrap();
    assert!(!accept_one(plain, address).await.nodelay().unwrap());
}
