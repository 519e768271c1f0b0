//! The KV transfer data plane the way a prefill and a decode worker use it: exports served over
//! a real TCP socket on loopback, pulled by `TcpFetch`, and read in process through
//! `LocalExports`.

mod fetch_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use dynamo_kvbm::transfer::{BlockStream, SocketWrap};
use dynamo_kvbm::{
    BlockServerConfig, Error, KvExports, KvFetch, KvFetcher, LocalExports, TcpFetch,
    TcpFetchConfig, serve_exports, serve_exports_with,
};
use fetch_common::read_back;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PREFILL: WorkerId = WorkerId::new(1);

/// Distinct, position-dependent bytes for `blocks` blocks (a xorshift stream).
fn kv_bytes(blocks: usize, block_bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..blocks * block_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn prompt(blocks: u64, first: u64) -> Vec<SequenceHash> {
    (first..first + blocks).map(SequenceHash).collect()
}

/// A block server for `exports` on a free loopback port.
async fn serve(
    exports: &Arc<KvExports>,
    config: BlockServerConfig,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    let server = tokio::spawn(serve_exports_with(listener, exports.clone(), config));
    (address, server)
}

/// Exports of 64 blocks of `block_bytes`, served, with one transfer of `blocks` blocks offered.
struct Served {
    exports: Arc<KvExports>,
    handoff: KvHandoff,
    bytes: Vec<u8>,
    server: JoinHandle<std::io::Result<()>>,
}

async fn served(block_bytes: usize, blocks: u64, config: BlockServerConfig) -> Served {
    let exports =
        Arc::new(KvExports::new(block_bytes, 64, Duration::from_secs(60)).expect("exports"));
    let (address, server) = serve(&exports, config).await;
    let hashes = prompt(blocks, 100);
    let bytes = kv_bytes(blocks as usize, block_bytes, blocks);
    let handoff = exports
        .offer(&hashes, &bytes)
        .expect("offered")
        .handoff(PREFILL, Some(address.to_string()));
    Served {
        exports,
        handoff,
        bytes,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_transfer_arrives_byte_exact_and_release_frees_the_source() {
    let block_bytes = 256 << 10;
    let Served {
        exports,
        handoff,
        bytes,
        ..
    } = served(block_bytes, 40, BlockServerConfig::default()).await;

    let mut config = TcpFetchConfig::new(block_bytes, 64);
    config.request_bytes = 1 << 20; // four blocks per request, four requests in flight
    let fetch = TcpFetch::new(config).expect("client");
    let fetched = fetch.fetch(&handoff).await.expect("pulled");
    assert_eq!(fetched.blocks, 40);
    assert!(read_back(&fetched, &handoff) == bytes, "10 MiB byte-exact");
    assert_eq!(fetch.landing_in_use(), 40);
    drop(fetched);
    assert_eq!(fetch.landing_in_use(), 0);
    assert_eq!(fetched_store_len(&fetch).await, 0);

    // The same connection serves the next pull, then the release.
    let again = fetch.fetch(&handoff).await.expect("pulled again");
    assert_eq!(again.blocks, 40);
    drop(again);
    fetch.release(&handoff).await;
    assert_eq!((exports.transfers(), exports.len()), (0, 0));
    let counters = exports.counters();
    assert_eq!((counters.released, counters.pulled_blocks), (1, 80));
    assert!(matches!(
        fetch.fetch(&handoff).await,
        Err(Error::UnknownTransfer { transfer }) if transfer == handoff.transfer
    ));
}

/// How many blocks the landing store of `fetch` holds, through an empty hand-over.
async fn fetched_store_len(fetch: &TcpFetch) -> usize {
    let empty = KvHandoff {
        source: PREFILL,
        address: Some("127.0.0.1:9".into()),
        transfer: 0,
        blocks: Vec::new(),
    };
    let fetched = fetch.fetch(&empty).await.expect("nothing to pull");
    fetched.store.len()
}

#[tokio::test]
async fn a_transfer_larger_than_the_landing_store_pulls_its_leading_blocks() {
    let block_bytes = 1024;
    let Served { handoff, bytes, .. } = served(block_bytes, 8, BlockServerConfig::default()).await;

    let fetch = TcpFetch::new(TcpFetchConfig::new(block_bytes, 5)).expect("client");
    let fetched = fetch.fetch(&handoff).await.expect("pulled");
    assert_eq!(fetched.blocks, 5);
    assert!(read_back(&fetched, &handoff) == bytes[..5 * block_bytes]);
    // A second pull of the same prompt shares the landed blocks.
    let shared = fetch.fetch(&handoff).await.expect("pulled");
    assert_eq!((shared.blocks, fetch.landing_in_use()), (5, 5));
    drop((fetched, shared));
    assert_eq!(fetch.landing_in_use(), 0);
}

/// A server that accepts connections, says when, and never answers.
async fn silent_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    let (accepted, rx) = tokio::sync::mpsc::channel(8);
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted.send(()).await;
        }
    });
    (address, rx, server)
}

#[tokio::test]
async fn a_silent_server_fails_the_pull_at_the_deadline() {
    let (address, _accepted, _server) = silent_server().await;
    let deadline = Duration::from_millis(300);
    let mut config = TcpFetchConfig::new(64, 8);
    config.deadline = deadline;
    let fetch = TcpFetch::new(config).expect("client");
    let handoff = KvHandoff {
        source: PREFILL,
        address: Some(address.to_string()),
        transfer: 1,
        blocks: prompt(4, 1),
    };
    let started = Instant::now();
    let pulled = fetch.fetch(&handoff).await;
    let took = started.elapsed();
    assert!(
        matches!(pulled, Err(Error::TransferTimeout { after, .. }) if after == deadline),
        "{pulled:?}"
    );
    assert!(took >= deadline && took < deadline * 10, "{took:?}");
    assert_eq!(fetch.landing_in_use(), 0);
    // Releasing to a silent server gives up at the deadline too.
    fetch.release(&handoff).await;
}

#[tokio::test]
async fn a_dropped_pull_gives_its_landing_room_back() {
    let (address, mut accepted, _server) = silent_server().await;
    let fetch = TcpFetch::new(TcpFetchConfig::new(64, 8)).expect("client");
    let handoff = KvHandoff {
        source: PREFILL,
        address: Some(address.to_string()),
        transfer: 1,
        blocks: prompt(6, 1),
    };
    let pull = tokio::spawn(fetch.fetch(&handoff));
    accepted.recv().await.expect("the pull connected");
    assert_eq!(
        fetch.landing_in_use(),
        6,
        "room is taken before the bytes come"
    );
    pull.abort();
    assert!(pull.await.is_err_and(|error| error.is_cancelled()));
    assert_eq!(fetch.landing_in_use(), 0);
}

#[tokio::test]
async fn a_pooled_connection_to_a_restarted_server_is_replaced() {
    let block_bytes = 512;
    let Served {
        exports,
        handoff,
        bytes,
        server: first,
    } = served(block_bytes, 3, BlockServerConfig::default()).await;
    let fetch = TcpFetch::new(TcpFetchConfig::new(block_bytes, 8)).expect("client");
    assert_eq!(fetch.fetch(&handoff).await.expect("pulled").blocks, 3);

    // The server goes away with the pooled connection, and comes back on the same port.
    first.abort();
    let _ = first.await;
    let address = handoff.address.as_deref().expect("served");
    let listener = TcpListener::bind(address).await.expect("the same port");
    let _second = tokio::spawn(serve_exports(listener, exports.clone()));
    let fetched = fetch
        .fetch(&handoff)
        .await
        .expect("pulled on a new connection");
    assert!(read_back(&fetched, &handoff) == bytes);
}

#[tokio::test]
async fn refusals_are_typed_errors() {
    let mut small = BlockServerConfig::default();
    small.max_request_bytes = 2048;
    let Served { handoff, .. } = served(1024, 4, small).await;

    let mut greedy = TcpFetchConfig::new(1024, 8);
    greedy.request_bytes = 4096;
    let refused = TcpFetch::new(greedy).expect("client").fetch(&handoff).await;
    assert!(
        matches!(&refused, Err(Error::Protocol { reason, .. }) if reason.contains("at most 2 blocks")),
        "{refused:?}"
    );

    let other_layout = TcpFetch::new(TcpFetchConfig::new(2048, 8)).expect("client");
    let refused = other_layout.fetch(&handoff).await;
    assert!(
        matches!(&refused, Err(Error::Protocol { reason, .. }) if reason.contains("1024")),
        "{refused:?}"
    );

    let mut nowhere = handoff.clone();
    nowhere.address = None;
    let fetch = TcpFetch::new(TcpFetchConfig::new(1024, 8)).expect("client");
    assert!(
        matches!(fetch.fetch(&nowhere).await, Err(Error::NoRoute { worker }) if worker == PREFILL)
    );
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let mut unreachable = handoff.clone();
    unreachable.address = Some(closed.local_addr().expect("bound").to_string());
    drop(closed);
    assert!(matches!(
        fetch.fetch(&unreachable).await,
        Err(Error::Transfer { .. })
    ));
}

#[tokio::test]
async fn the_fetcher_reads_local_exports_in_place_and_pulls_remote_ones() {
    let block_bytes = 256;
    let Served {
        exports,
        handoff,
        bytes,
        ..
    } = served(block_bytes, 4, BlockServerConfig::default()).await;

    let local = LocalExports::new();
    let tcp = TcpFetch::new(TcpFetchConfig::new(block_bytes, 8)).expect("client");
    let fetcher = KvFetcher::new(local.clone()).with_tcp(tcp.clone());
    // Not registered here: pulled over TCP into the landing store.
    let pulled = fetcher.fetch(&handoff).await.expect("pulled");
    assert!(read_back(&pulled, &handoff) == bytes);
    assert_eq!(tcp.landing_in_use(), 4);
    drop(pulled);

    // Registered: the exports themselves are the store.
    local.register(PREFILL, exports.clone());
    let in_place = fetcher.fetch(&handoff).await.expect("read in place");
    assert!(read_back(&in_place, &handoff) == bytes);
    assert_eq!(tcp.landing_in_use(), 0);
    drop(in_place);
    fetcher.release(&handoff).await;
    assert!(exports.is_empty());
    assert!(matches!(
        fetcher.fetch(&handoff).await,
        Err(Error::UnknownTransfer { .. })
    ));

    local.unregister(PREFILL);
    let mut nowhere = handoff;
    nowhere.address = None;
    assert!(matches!(
        fetcher.fetch(&nowhere).await,
        Err(Error::NoRoute { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_prefix_share_the_landing_store() {
    let block_bytes = 64 << 10;
    let Served {
        exports, handoff, ..
    } = served(block_bytes, 8, BlockServerConfig::default()).await;
    // Three more transfers: the same first four blocks, then four of their own.
    let mut handoffs = vec![handoff.clone()];
    for first in [200, 300, 400] {
        let hashes: Vec<SequenceHash> = handoff.blocks[..4]
            .iter()
            .copied()
            .chain(prompt(4, first))
            .collect();
        let mut bytes = Vec::new();
        for hash in &hashes {
            bytes.extend(std::iter::repeat_n(hash.0 as u8, block_bytes));
        }
        let offered = exports.offer(&hashes, &bytes).expect("offered");
        assert_eq!(offered.blocks, hashes);
        handoffs.push(offered.handoff(PREFILL, handoff.address.clone()));
    }
    assert_eq!(exports.len(), 8 + 3 * 4);

    let fetch = TcpFetch::new(TcpFetchConfig::new(block_bytes, 64)).expect("client");
    let pulls = handoffs.iter().map(|handoff| fetch.fetch(handoff));
    let fetched = futures::future::try_join_all(pulls).await.expect("pulled");
    assert_eq!(fetch.landing_in_use(), 8 + 3 * 4);
    // The shared blocks keep the bytes they were first offered with.
    let first = read_back(&fetched[0], &handoffs[0]);
    for (fetched, handoff) in fetched.iter().zip(&handoffs) {
        let bytes = read_back(fetched, handoff);
        assert!(bytes[..4 * block_bytes] == first[..4 * block_bytes]);
    }
    drop(fetched);
    assert_eq!(fetch.landing_in_use(), 0);
    for handoff in &handoffs {
        fetch.release(handoff).await;
    }
    assert!(exports.is_empty());
}

#[tokio::test]
async fn a_transfer_past_its_lease_is_unknown_to_the_puller() {
    let Served {
        exports, handoff, ..
    } = served(1024, 2, BlockServerConfig::default()).await;
    assert_eq!(exports.expire(Instant::now() + exports.lease()), 1);
    let fetch = TcpFetch::new(TcpFetchConfig::new(1024, 8)).expect("client");
    assert!(matches!(
        fetch.fetch(&handoff).await,
        Err(Error::UnknownTransfer { .. })
    ));
    assert_eq!((exports.counters().expired, fetch.landing_in_use()), (1, 0));
}

/// A wrap that counts the connections it wraps, or refuses every one.
#[derive(Debug, Default)]
struct Counting {
    wrapped: std::sync::atomic::AtomicUsize,
    refuse: bool,
}

impl Counting {
    fn wrap(&self, socket: TcpStream) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
        self.wrapped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let refuse = self.refuse;
        async move {
            if refuse {
                return Err(std::io::Error::other("refused by the wrap"));
            }
            Ok(Box::new(socket) as Box<dyn BlockStream>)
        }
        .boxed()
    }

    fn count(&self) -> usize {
        self.wrapped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl SocketWrap for Counting {
    fn server(
        &self,
        socket: TcpStream,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
        self.wrap(socket)
    }

    fn client(
        &self,
        socket: TcpStream,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn BlockStream>>> {
        self.wrap(socket)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_run_the_protocol_over_their_wrap_and_a_refused_wrap_fails_the_pull() {
    let block_bytes = 4096;
    let server_wrap = Arc::new(Counting::default());
    let mut server = BlockServerConfig::default();
    server.wrap = Some(server_wrap.clone());
    let Served { handoff, bytes, .. } = served(block_bytes, 6, server).await;

    let client_wrap = Arc::new(Counting::default());
    let mut config = TcpFetchConfig::new(block_bytes, 8);
    config.wrap = Some(client_wrap.clone());
    let fetch = TcpFetch::new(config).expect("client");
    let fetched = fetch.fetch(&handoff).await.expect("pulled over the wrap");
    assert!(read_back(&fetched, &handoff) == bytes);
    drop(fetched);
    fetch.release(&handoff).await;
    // One connection, wrapped once on each side, reused for the release.
    assert_eq!((client_wrap.count(), server_wrap.count()), (1, 1));

    let refusing = Arc::new(Counting {
        refuse: true,
        ..Counting::default()
    });
    let mut server = BlockServerConfig::default();
    server.wrap = Some(refusing.clone());
    let Served { handoff, .. } = served(block_bytes, 2, server).await;
    let plain = TcpFetch::new(TcpFetchConfig::new(block_bytes, 8)).expect("client");
    let refused = plain.fetch(&handoff).await;
    assert!(
        matches!(refused, Err(Error::Transfer { .. })),
        "{refused:?}"
    );
    assert_eq!(plain.landing_in_use(), 0);
    assert!(refusing.count() >= 1);
}
