//! The TCP request plane against raw loopback TCP, in the same run:
//!
//! - `round_trip`: one request and its one-token answer (request frame, token chunk, final
//!   chunk) against a raw 64-byte echo on its own connection;
//! - `stream_256_tokens`: a 256-token answer streamed chunk by chunk against a raw server writing
//!   256 frames of the same size (about 90 bytes) for one 64-byte request.
//!
//! Both sides keep one connection open across iterations, as a frontend does.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{EchoEngine, EngineExt, GenerateRequest};
use dynamo_transport::tcp::{RemoteEngine, ServeConfig, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const TOKENS: u32 = 256;
const RAW_FRAME: usize = 90;

/// A raw server: for each 64-byte request, write `frames` frames of `RAW_FRAME` bytes.
async fn raw_server(listener: TcpListener, frames: usize) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut request = [0u8; 64];
            let frame = [7u8; RAW_FRAME];
            while socket.read_exact(&mut request).await.is_ok() {
                for _ in 0..frames {
                    if socket.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn raw_client(address: std::net::SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(address).await.expect("connected");
    let _ = socket.set_nodelay(true);
    socket
}

async fn raw_exchange(socket: &mut TcpStream, frames: usize) {
    socket.write_all(&[1u8; 64]).await.expect("written");
    let mut answer = vec![0u8; frames * RAW_FRAME];
    socket.read_exact(&mut answer).await.expect("read");
}

fn benches(c: &mut Criterion) {
    let runtime = Runtime::new().expect("a runtime");
    let (remote, raw_one, raw_many) = runtime.block_on(async {
        let ours = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let ours_address = ours.local_addr().expect("bound");
        tokio::spawn(serve(ours, EchoEngine::new(), ServeConfig::default()));
        let one = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let one_address = one.local_addr().expect("bound");
        tokio::spawn(raw_server(one, 1));
        let many = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let many_address = many.local_addr().expect("bound");
        tokio::spawn(raw_server(many, TOKENS as usize));
        (
            RemoteEngine::connect(ours_address)
                .await
                .expect("connected"),
            raw_client(one_address).await,
            raw_client(many_address).await,
        )
    });
    let prompt: Vec<u32> = (0..TOKENS).collect();

    let mut round_trip = c.benchmark_group("round_trip");
    let mut raw = raw_one;
    round_trip.bench_function("raw_tcp_echo", |b| {
        b.iter(|| runtime.block_on(raw_exchange(&mut raw, 1)));
    });
    let mut engine = remote.clone();
    round_trip.bench_function("remote_engine_one_token", |b| {
        b.iter(|| {
            let request =
                GenerateRequest::new("r", "echo", prompt[..8].to_vec()).with_max_tokens(1);
            runtime
                .block_on(engine.generate_all(request))
                .expect("an answer")
        });
    });
    round_trip.finish();

    let mut stream = c.benchmark_group("stream_256_tokens");
    stream.throughput(Throughput::Elements(u64::from(TOKENS)));
    let mut raw = raw_many;
    stream.bench_function("raw_tcp_frames", |b| {
        b.iter(|| runtime.block_on(raw_exchange(&mut raw, TOKENS as usize)));
    });
    let mut engine = remote;
    stream.bench_function("remote_engine", |b| {
        b.iter(|| {
            let request = GenerateRequest::new("r", "echo", prompt.clone()).with_max_tokens(TOKENS);
            runtime
                .block_on(engine.generate_all(request))
                .expect("an answer")
        });
    });
    stream.finish();
}

criterion_group!(request_plane, benches);
criterion_main!(request_plane);
