//! The NIXL hand-over end to end: a prefill side's `KvExports` served by a block server with a
//! `NixlSource`, a decode side's `NixlFetch` READing the blocks over UCX after staging them
//! through the server's TCP control path, then releasing them.
//!
//! Skips where NIXL is not loaded, unless `DYNAMO_REQUIRE_NIXL=1` (CI's NIXL step).

mod fetch_common;
mod nixl_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use dynamo_kvbm::{
    BlockServerConfig, Error, KvExports, KvFetch, KvFetcher, LocalExports, NixlAgent, NixlFetch,
    NixlSource, TcpFetch, TcpFetchConfig, serve_exports_with,
};
use fetch_common::read_back;
use nixl_common::{nixl_or_skip, random_bytes};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// SmolLM2-135M's KV for 64 tokens in f32: the candle model's block (docs/kvbm.md).
const BLOCK: usize = 2_949_120;
const PREFILL: WorkerId = WorkerId::new(1);
const SLOTS: usize = 16;

/// A prefill side: exports of 32 blocks served with a NIXL slab of [`SLOTS`] blocks (or no NIXL).
struct Prefill {
    exports: Arc<KvExports>,
    source: Option<Arc<NixlSource>>,
    address: String,
    server: JoinHandle<std::io::Result<()>>,
}

async fn prefill(name: Option<&str>) -> Prefill {
    let exports = Arc::new(KvExports::new(BLOCK, 32, Duration::from_secs(60)).expect("exports"));
    let source = name.map(|name| {
        let agent = NixlAgent::ucx(name).expect("an agent");
        Arc::new(NixlSource::new(agent, BLOCK, SLOTS).expect("a slab"))
    });
    let mut config = BlockServerConfig::default();
    config.nixl = source.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("bound").to_string();
    let server = tokio::spawn(serve_exports_with(listener, exports.clone(), config));
    Prefill {
        exports,
        source,
        address,
        server,
    }
}

impl Prefill {
    /// Offer `blocks` blocks of random bytes: the hand-over and the bytes.
    fn offer(&self, blocks: u64, first: u64) -> (KvHandoff, Vec<u8>) {
        let hashes: Vec<_> = (first..first + blocks).map(SequenceHash).collect();
        let bytes = random_bytes(blocks as usize * BLOCK, first);
        let handoff = self
            .exports
            .offer(&hashes, &bytes)
            .expect("offered")
            .handoff(PREFILL, Some(self.address.clone()));
        (handoff, bytes)
    }
}

fn decode(name: &str, deadline: Duration) -> NixlFetch {
    let mut config = TcpFetchConfig::new(BLOCK, 8);
    config.deadline = deadline;
    let tcp = TcpFetch::new(config).expect("a TCP client");
    NixlFetch::new(NixlAgent::ucx(name).expect("an agent"), tcp, 12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_is_read_over_nixl_byte_exact_and_release_frees_both_sides() {
    if !nixl_or_skip("a_handover_is_read_over_nixl_byte_exact") {
        return;
    }
    let prefill = prefill(Some("prefill-exact")).await;
    let source = prefill.source.clone().expect("NIXL");
    let fetch = decode("decode-exact", Duration::from_secs(30));
    let (handoff, bytes) = prefill.offer(6, 100);

    let fetched = fetch.fetch(&handoff).await.expect("fetched");
    assert_eq!(fetched.blocks, 6);
    assert!(read_back(&fetched, &handoff) == bytes, "byte-exact");
    // Staged in the source's slab (not pulled over TCP), landed here.
    assert_eq!(source.free_slots(), SLOTS - 6);
    assert_eq!(fetch.landing_in_use(), 6);
    drop(fetched);
    assert_eq!(fetch.landing_in_use(), 0);

    // A second hand-over from the same source reuses its loaded metadata.
    let (second, more) = prefill.offer(3, 200);
    let fetched = fetch.fetch(&second).await.expect("fetched");
    assert!(read_back(&fetched, &second) == more);
    drop(fetched);

    fetch.release(&handoff).await;
    fetch.release(&second).await;
    assert!(prefill.exports.is_empty());
    assert_eq!(source.free_slots(), SLOTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_or_expired_transfer_is_refused() {
    if !nixl_or_skip("a_released_or_expired_transfer_is_refused") {
        return;
    }
    let prefill = prefill(Some("prefill-refused")).await;
    let source = prefill.source.clone().expect("NIXL");
    let fetch = decode("decode-refused", Duration::from_secs(30));
    let (released, _) = prefill.offer(2, 100);
    fetch.fetch(&released).await.expect("fetched");
    fetch.release(&released).await;
    let refused = fetch.fetch(&released).await;
    assert!(
        matches!(refused, Err(Error::UnknownTransfer { .. })),
        "{refused:?}"
    );

    let (expired, _) = prefill.offer(2, 300);
    fetch.fetch(&expired).await.expect("fetched");
    let lease = prefill.exports.lease();
    assert_eq!(prefill.exports.expire(Instant::now() + lease), 1);
    let refused = fetch.fetch(&expired).await;
    assert!(
        matches!(refused, Err(Error::UnknownTransfer { .. })),
        "{refused:?}"
    );
    // The expired transfer's slots were freed by the refused stage.
    assert_eq!(source.free_slots(), SLOTS);
    assert_eq!(fetch.landing_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_whose_source_is_gone_fails_typed_within_its_deadline() {
    if !nixl_or_skip("a_fetch_whose_source_is_gone_fails_typed_within_its_deadline") {
        return;
    }
    let deadline = Duration::from_millis(500);
    let fetch = decode("decode-gone", deadline);
    let prefill = prefill(Some("prefill-gone")).await;
    let (handoff, _) = prefill.offer(2, 100);
    prefill.server.abort();
    let _ = prefill.server.await;
    let started = Instant::now();
    let failed = fetch.fetch(&handoff).await;
    assert!(
        matches!(
            failed,
            Err(Error::Transfer { .. } | Error::TransferTimeout { .. })
        ),
        "{failed:?}"
    );
    assert!(started.elapsed() < deadline * 4, "{:?}", started.elapsed());

    // A server that accepts and never answers: the fetch times out at its deadline.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let silent = listener.local_addr().expect("bound").to_string();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let handoff = KvHandoff {
        address: Some(silent),
        ..handoff
    };
    let started = Instant::now();
    let late = fetch.fetch(&handoff).await;
    let took = started.elapsed();
    assert!(
        matches!(late, Err(Error::TransferTimeout { after, .. }) if after == deadline),
        "{late:?}"
    );
    assert!(took >= deadline && took < deadline * 4, "{took:?}");
    assert_eq!(fetch.landing_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_server_without_nixl_is_pulled_over_tcp_and_the_fetcher_prefers_nixl() {
    if !nixl_or_skip("a_block_server_without_nixl_is_pulled_over_tcp") {
        return;
    }
    let fetch = decode("decode-fallback", Duration::from_secs(30));
    let plain = prefill(None).await;
    let (handoff, bytes) = plain.offer(3, 100);
    let fetched = fetch.fetch(&handoff).await.expect("pulled over TCP");
    assert!(read_back(&fetched, &handoff) == bytes);
    drop(fetched);
    fetch.release(&handoff).await;
    assert!(plain.exports.is_empty());

    let with_nixl = prefill(Some("prefill-fetcher")).await;
    let source = with_nixl.source.clone().expect("NIXL");
    let tcp = TcpFetch::new(TcpFetchConfig::new(BLOCK, 8)).expect("a TCP client");
    let fetcher = KvFetcher::new(LocalExports::new())
        .with_tcp(tcp)
        .with_nixl(fetch.clone());
    let (handoff, bytes) = with_nixl.offer(4, 400);
    let fetched = fetcher.fetch(&handoff).await.expect("fetched");
    assert!(read_back(&fetched, &handoff) == bytes);
    assert_eq!(source.free_slots(), SLOTS - 4, "staged for NIXL");
    drop(fetched);
    fetcher.release(&handoff).await;
    assert_eq!(source.free_slots(), SLOTS);
    assert!(with_nixl.exports.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_source_slab_stages_what_fits_then_the_fetch_goes_over_tcp() {
    if !nixl_or_skip("a_full_source_slab_stages_what_fits") {
        return;
    }
    let prefill = prefill(Some("prefill-full")).await;
    let source = prefill.source.clone().expect("NIXL");
    let fetch = decode("decode-full", Duration::from_secs(30));
    let (held, _) = prefill.offer(10, 100);
    assert_eq!(fetch.fetch(&held).await.expect("fetched").blocks, 10);
    // Six slots left: the next hand-over's six leading blocks are staged and read.
    let (partial, bytes) = prefill.offer(8, 200);
    let fetched = fetch.fetch(&partial).await.expect("fetched");
    assert_eq!(fetched.blocks, 6);
    assert!(read_back(&fetched, &partial) == bytes[..6 * BLOCK]);
    drop(fetched);
    assert_eq!(source.free_slots(), 0);
    // None left: pulled over TCP, whole.
    let (over_tcp, bytes) = prefill.offer(3, 300);
    let fetched = fetch.fetch(&over_tcp).await.expect("pulled");
    assert!(read_back(&fetched, &over_tcp) == bytes);
    drop(fetched);
    for handoff in [&held, &partial, &over_tcp] {
        fetch.release(handoff).await;
    }
    assert_eq!(source.free_slots(), SLOTS);
    assert!(prefill.exports.is_empty());
}
