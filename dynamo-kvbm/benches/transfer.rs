//! Pulling a prompt's KV blocks from another process over loopback, against raw TCP in the same
//! run.
//!
//! The bench starts a copy of itself as the prefill worker's process (the environment variable
//! `KVBM_TRANSFER_BENCH_SERVE` set); that child offers one transfer of `BLOCKS` SmolLM2-135M
//! blocks (16 tokens × 30 layers × 3 KV heads × 64 dims × K and V × f32 = 737,280 bytes each)
//! to its `KvExports`, serves them with `serve_exports`, and serves the same number of bytes
//! from two raw TCP servers: for an 8-byte request, the bytes in 4 MiB writes from one buffer,
//! one on tokio (the I/O model ours has), one on blocking sockets with a thread per connection
//! (the machine's ceiling).
//!
//! - `tcp_fetch`: `TcpFetch` pulls the transfer into its landing store (and drops it);
//! - `raw_tcp_tokio`, `raw_tcp_blocking`: a client of the same kind reads the same bytes into
//!   one buffer with `read_exact`;
//! - `in_process`: for scale, a decode worker in the prefill worker's process copies the same
//!   blocks out of `LocalExports` into its KV memory.
//!
//! Each side keeps its connection across iterations. After criterion's groups, the bench runs
//! `PAIRED_ROUNDS` rounds of the three pulls back to back, and prints the median throughput of
//! each and the medians of the per-round ratios: on a shared machine, load that drifts between
//! criterion's groups then weighs on all sides alike.
//!
//! The parent's runtime is tokio's multi-threaded one; with `KVBM_BENCH_CURRENT_THREAD` set it
//! is a current-thread runtime (tokio's raw client and `TcpFetch` then run their I/O on the
//! bench's thread).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use dynamo_kvbm::{KvExports, KvFetch, LocalExports, TcpFetch, TcpFetchConfig, serve_exports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

const BLOCK_BYTES: usize = 16 * 30 * 3 * 64 * 2 * 4;
const BLOCKS: usize = 200;
const TRANSFER_BYTES: usize = BLOCKS * BLOCK_BYTES;
const SERVE: &str = "KVBM_TRANSFER_BENCH_SERVE";
const RAW_WRITE: usize = 4 << 20;
const PAIRED_ROUNDS: usize = 15;

fn prompt() -> Vec<SequenceHash> {
    (1..=BLOCKS as u64).map(SequenceHash).collect()
}

/// Exports holding one transfer of the prompt; its id.
fn exports() -> (Arc<KvExports>, u64) {
    let exports =
        Arc::new(KvExports::new(BLOCK_BYTES, BLOCKS, Duration::from_secs(3600)).expect("exports"));
    let bytes: Vec<u8> = (0..TRANSFER_BYTES).map(|i| (i % 251) as u8).collect();
    let offered = exports.offer(&prompt(), &bytes).expect("offered");
    assert_eq!(offered.blocks.len(), BLOCKS);
    (exports, offered.transfer)
}

/// A raw server on blocking sockets, a thread per connection.
fn raw_blocking_server(listener: std::net::TcpListener) {
    for socket in listener.incoming() {
        let Ok(mut socket) = socket else { return };
        let _ = socket.set_nodelay(true);
        std::thread::spawn(move || {
            let (mut request, buffer) = ([0u8; 8], vec![7u8; RAW_WRITE]);
            while socket.read_exact(&mut request).is_ok() {
                for start in (0..TRANSFER_BYTES).step_by(RAW_WRITE) {
                    let n = RAW_WRITE.min(TRANSFER_BYTES - start);
                    if socket.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// The same on tokio, a task per connection.
async fn raw_tokio_server(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let (mut request, buffer) = ([0u8; 8], vec![7u8; RAW_WRITE]);
            while socket.read_exact(&mut request).await.is_ok() {
                for start in (0..TRANSFER_BYTES).step_by(RAW_WRITE) {
                    let n = RAW_WRITE.min(TRANSFER_BYTES - start);
                    if socket.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// The child: serve the exports and the raw servers until the parent closes our stdin.
fn serve() {
    let runtime = Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let (exports, transfer) = exports();
        let ours = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let tokio_raw = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let blocking = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        println!(
            "{} {} {} {transfer}",
            ours.local_addr().expect("bound"),
            tokio_raw.local_addr().expect("bound"),
            blocking.local_addr().expect("bound"),
        );
        std::io::stdout().flush().expect("told the parent");
        tokio::spawn(serve_exports(ours, exports));
        tokio::spawn(raw_tokio_server(tokio_raw));
        std::thread::spawn(move || raw_blocking_server(blocking));
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    });
}

/// One way of pulling the transfer, with its connection kept.
enum Pull {
    Blocking(std::net::TcpStream),
    Tokio(tokio::net::TcpStream),
    Ours(TcpFetch, KvHandoff),
}

impl Pull {
    fn run(&mut self, runtime: &Runtime, into: &mut [u8]) {
        match self {
            Pull::Blocking(socket) => {
                socket.write_all(&[1; 8]).expect("asked");
                socket.read_exact(into).expect("read");
            }
            Pull::Tokio(socket) => runtime.block_on(async {
                socket.write_all(&[1; 8]).await.expect("asked");
                socket.read_exact(into).await.expect("read");
            }),
            Pull::Ours(fetch, handoff) => {
                let fetched = runtime.block_on(fetch.fetch(handoff)).expect("pulled");
                assert_eq!(fetched.blocks, BLOCKS);
            }
        }
    }
}

/// The pulls back to back, `PAIRED_ROUNDS` times, starting with a different one each round;
/// the median throughputs and ratios.
fn paired(runtime: &Runtime, pulls: &mut [(&str, Pull)], into: &mut [u8]) {
    let mut gbps = vec![Vec::new(); pulls.len()];
    for round in 0..PAIRED_ROUNDS {
        for k in 0..pulls.len() {
            let i = (round + k) % pulls.len();
            let started = Instant::now();
            pulls[i].1.run(runtime, into);
            gbps[i].push(TRANSFER_BYTES as f64 / started.elapsed().as_secs_f64() / 1e9);
        }
    }
    let ours = gbps.len() - 1;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("paired: {PAIRED_ROUNDS} rounds of {BLOCKS} blocks of {BLOCK_BYTES} bytes");
    for (i, (name, _)) in pulls.iter().enumerate() {
        let ratio: Vec<f64> = gbps[ours]
            .iter()
            .zip(&gbps[i])
            .map(|(o, r)| o / r)
            .collect();
        println!(
            "  {name}: {:.2} GB/s; tcp_fetch / {name}: {:.0}%",
            median(gbps[i].clone()),
            100.0 * median(ratio)
        );
    }
}

fn main() {
    if std::env::var_os(SERVE).is_some() {
        serve();
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .env(SERVE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its addresses");
    let words: Vec<&str> = line.split_whitespace().collect();
    let [ours, tokio_raw, blocking, transfer] = words[..] else {
        panic!("the server said {line:?}")
    };
    let handoff = KvHandoff {
        source: WorkerId::new(1),
        address: Some(ours.to_owned()),
        transfer: transfer.parse().expect("a transfer id"),
        blocks: prompt(),
    };

    let runtime = if std::env::var_os("KVBM_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    } else {
        Runtime::new().expect("a runtime")
    };
    let blocking = std::net::TcpStream::connect(blocking).expect("connected");
    let _ = blocking.set_nodelay(true);
    let tokio_raw = runtime.block_on(async {
        let socket = tokio::net::TcpStream::connect(tokio_raw)
            .await
            .expect("connected");
        let _ = socket.set_nodelay(true);
        socket
    });
    let fetch = TcpFetch::new(TcpFetchConfig::new(BLOCK_BYTES, BLOCKS)).expect("client");
    let mut pulls = [
        ("raw_tcp_blocking", Pull::Blocking(blocking)),
        ("raw_tcp_tokio", Pull::Tokio(tokio_raw)),
        ("tcp_fetch", Pull::Ours(fetch, handoff.clone())),
    ];
    let mut into = vec![0u8; TRANSFER_BYTES];

    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut group = criterion.benchmark_group("transfer_200_smollm2_blocks");
    group.throughput(Throughput::Bytes(TRANSFER_BYTES as u64));
    for (name, pull) in &mut pulls {
        group.bench_function(*name, |b| b.iter(|| pull.run(&runtime, &mut into)));
    }

    let (exports, transfer) = exports();
    let local = LocalExports::new();
    local.register(WorkerId::new(1), exports);
    let local_handoff = KvHandoff {
        address: None,
        transfer,
        ..handoff
    };
    group.bench_function("in_process", |b| {
        b.iter(|| {
            let fetched = runtime
                .block_on(local.fetch(&local_handoff))
                .expect("readable");
            fetched
                .store
                .get_many(&local_handoff.blocks, &mut into)
                .expect("copied");
        });
    });
    group.finish();
    criterion.final_summary();
    paired(&runtime, &mut pulls, &mut into);
    drop(child.stdin.take());
    let _ = child.wait();
}
