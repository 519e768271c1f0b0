//! Moving KV blocks between two NIXL agents with UCX on this host, against this crate's TCP block
//! transfer and `memcpy` in the same run.
//!
//! For each block size, a transfer of `count` blocks, three ways, round after round, each round
//! starting with a different one:
//!
//! - `memcpy`: the transfer's bytes copied from one buffer into another (the ceiling);
//! - `nixl_read`: a reader agent READs the owner agent's blocks into its landing memory, one
//!   request with a descriptor per block, built, posted and waited for;
//! - `tcp_fetch`: `TcpFetch` pulls the same number of blocks from `KvExports` served over
//!   loopback TCP by `serve_exports`, into its landing store.
//!
//! Both agents and the block server live in this process. UCX picks its transports itself
//! (`UCX_TLS` chooses: `UCX_TLS=tcp` for its TCP transport). The environment NIXL needs is the
//! one `.ci/run` sets; without NIXL the bench says so and stops. It prints the median GB/s of
//! each way and the medians of the per-round ratios. Run by `cargo test` (without `--bench`),
//! it does one round, as a check that it still runs.

#[path = "../tests/nixl_common/mod.rs"]
mod nixl_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use dynamo_kvbm::{KvExports, KvFetch, TcpFetch, TcpFetchConfig, serve_exports};
use nixl_common::{Peer, addr};
use nixl_sys::XferOp;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// (name, block bytes, blocks per transfer): SmolLM2-135M's 64-token block in f32 and a
/// 70B-class model's in bf16, the disk tier's sizes (docs/kvbm.md).
const CASES: [(&str, usize, usize); 2] = [
    ("SmolLM2 2.9 MB x 16", 2_949_120, 16),
    ("70B 21 MB x 4", 20_971_520, 4),
];
const ROUNDS: usize = 11;
const WAYS: [&str; 3] = ["memcpy", "nixl_read", "tcp_fetch"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !dynamo_kvbm::is_nixl_loaded() {
        eprintln!("NIXL is not loaded (LD_LIBRARY_PATH; see .ci/run): nothing to measure");
        return;
    }
    let rounds = if std::env::args().any(|a| a == "--bench") {
        ROUNDS
    } else {
        1
    };
    let runtime = Runtime::new().expect("a runtime");
    for (case, (name, block, count)) in CASES.into_iter().enumerate() {
        let bytes = block * count;
        // NIXL: the owner's blocks, each its own registration, and the reader's landing memory.
        let owner = Peer::ucx(&format!("owner-{case}"));
        let reader = Peer::ucx(&format!("reader-{case}"));
        let blocks: Vec<_> = (0..count).map(|i| owner.storage(block, i as u8)).collect();
        let landing = reader.storage(bytes, 0);
        reader.load(&owner);
        let ranges: Vec<_> = blocks
            .iter()
            .enumerate()
            .map(|(slot, b)| (addr(&landing) + slot * block, addr(b), block))
            .collect();
        let remote = owner.agent.name();
        // TCP: the same blocks offered by a block server on loopback.
        let source: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        let hashes: Vec<SequenceHash> = (1..=count as u64).map(SequenceHash).collect();
        let exports =
            Arc::new(KvExports::new(block, count, Duration::from_secs(3600)).expect("exports"));
        let transfer = exports.offer(&hashes, &source).expect("offered").transfer;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let handoff = KvHandoff {
            source: WorkerId::new(1),
            address: Some(listener.local_addr().expect("bound").to_string()),
            transfer,
            blocks: hashes,
        };
        runtime.spawn(serve_exports(listener, exports));
        let fetch = TcpFetch::new(TcpFetchConfig::new(block, count)).expect("a client");
        let mut into = vec![0u8; bytes];

        let mut gbps = vec![Vec::new(); WAYS.len()];
        for round in 0..=rounds {
            for k in 0..WAYS.len() {
                let way = (round + k) % WAYS.len();
                let started = Instant::now();
                match way {
                    0 => into.copy_from_slice(&source),
                    1 => reader
                        .transfer(XferOp::Read, &remote, &ranges, Duration::from_secs(30))
                        .expect("read over NIXL"),
                    _ => {
                        let fetched = runtime.block_on(fetch.fetch(&handoff)).expect("pulled");
                        assert_eq!(fetched.blocks, count);
                    }
                }
                // Round 0 warms every way up and is not counted.
                if round > 0 {
                    gbps[way].push(bytes as f64 / started.elapsed().as_secs_f64() / 1e9);
                }
            }
        }
        assert!(
            landing
                .as_slice()
                .chunks(block)
                .enumerate()
                .all(|(i, c)| c[0] == i as u8)
        );
        std::hint::black_box(&into);
        println!("{name} ({bytes} bytes per transfer), {rounds} rounds:");
        for (way, label) in WAYS.iter().enumerate() {
            let ratio = |base: usize| {
                median(
                    gbps[way]
                        .iter()
                        .zip(&gbps[base])
                        .map(|(w, b)| w / b)
                        .collect(),
                )
            };
            println!(
                "  {label:>9}: {:6.2} GB/s; / memcpy {:4.0}%; / tcp_fetch {:4.0}%",
                median(gbps[way].clone()),
                100.0 * ratio(0),
                100.0 * ratio(2)
            );
        }
    }
}
