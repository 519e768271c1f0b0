//! Moving KV blocks between two NIXL agents with UCX on this host, against this crate's TCP block
//! transfer and `memcpy` in the same run.
//!
//! For each block size, a transfer of `count` blocks, three ways, round after round, each round
//! starting with a different one:
//!
//! - `memcpy`: the transfer's bytes copied from one buffer into another (the ceiling);
//! - `nixl_read`: a reader agent READs the owner agent's blocks into its landing memory, one
//!   request with a descriptor per block, built, posted and waited for;
//! - `nixl_read_process`: the same READ from an owner agent in another process (a copy of the
//!   bench started with `KVBM_NIXL_BENCH_OWNER` set, which sends its agent's metadata and its
//!   blocks' addresses on its standard output);
//! - `tcp_fetch`: `TcpFetch` pulls the same number of blocks from `KvExports` served over
//!   loopback TCP by `serve_exports`, into its landing store;
//! - `nixl_fetch`: `NixlFetch` fetches the same hand-over from the same block server, which has
//!   a `NixlSource`: the stage request over TCP (the server copies the blocks into its
//!   registered slab and answers its agent's metadata and the addresses), one batched READ into
//!   landing memory registered for the fetch, the `Fetched` dropped (the whole hand-over as a
//!   decode worker sees it, but the release);
//! - `nixl_fetch_process`: the same from a block server in the other process.
//!
//! The block server lives in this process. UCX picks its transports itself
//! (`UCX_TLS` chooses: `UCX_TLS=tcp` for its TCP transport). The environment NIXL needs is the
//! one `.ci/run` sets; without NIXL the bench says so and stops. It prints the median GB/s of
//! each way and the medians of the per-round ratios. Run by `cargo test` (without `--bench`),
//! it does one round, as a check that it still runs.

#[path = "../tests/nixl_common/mod.rs"]
mod nixl_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use dynamo_kvbm::{
    BlockServerConfig, KvExports, KvFetch, NixlAgent, NixlFetch, NixlSource, TcpFetch,
    TcpFetchConfig, serve_exports_with,
};
use nixl_common::{Peer, addr, random_bytes};
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
const WAYS: [&str; 6] = [
    "memcpy",
    "nixl_read",
    "nixl_read_process",
    "tcp_fetch",
    "nixl_fetch",
    "nixl_fetch_process",
];
const TCP: usize = 3;
const OWNER: &str = "KVBM_NIXL_BENCH_OWNER";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The transfer's bytes, as both processes offer them.
fn source_bytes(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

/// `count` blocks of `block` bytes ([`source_bytes`]) offered by exports served on loopback by a
/// block server with a `NixlSource` whose agent is `agent`: the hand-over.
fn serve_blocks(runtime: &Runtime, agent: &str, block: usize, count: usize) -> KvHandoff {
    let hashes: Vec<SequenceHash> = (1..=count as u64).map(SequenceHash).collect();
    let exports =
        Arc::new(KvExports::new(block, count, Duration::from_secs(3600)).expect("exports"));
    let transfer = exports
        .offer(&hashes, &source_bytes(block * count))
        .expect("offered")
        .transfer;
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let mut config = BlockServerConfig::default();
    let slab_agent = NixlAgent::ucx(agent).expect("an agent");
    config.nixl = Some(Arc::new(
        NixlSource::new(slab_agent, block, count).expect("a slab"),
    ));
    let address = listener.local_addr().expect("bound").to_string();
    runtime.spawn(serve_exports_with(listener, exports, config));
    KvHandoff {
        source: WorkerId::new(1),
        address: Some(address),
        transfer,
        blocks: hashes,
    }
}

/// The other process: per case, an owner agent and its blocks, and a line on standard output
/// (the agent's metadata in hex, then each block's address), and a block server with a
/// `NixlSource` and a second line (its address and the transfer's id); then wait for stdin to
/// close.
fn own_blocks() {
    let mut kept = Vec::new();
    let runtime = Runtime::new().expect("a runtime");
    let mut out = std::io::stdout().lock();
    for (case, (_, block, count)) in CASES.into_iter().enumerate() {
        let handoff = serve_blocks(&runtime, &format!("source-process-{case}"), block, count);
        let owner = Peer::ucx(&format!("owner-process-{case}"));
        let blocks: Vec<_> = (0..count)
            .map(|i| owner.storage(block, i as u64 + 1))
            .collect();
        let mut line = hex(&owner.agent.get_local_md().expect("metadata"));
        for b in &blocks {
            line.push_str(&format!(" {}", addr(b)));
        }
        writeln!(out, "{line}").expect("told the parent");
        let address = handoff.address.expect("served");
        writeln!(out, "{address} {}", handoff.transfer).expect("told the parent");
        kept.push((owner, blocks));
    }
    out.flush().expect("told the parent");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
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
    if std::env::var_os(OWNER).is_some() {
        own_blocks();
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .env(OWNER, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the owner process");
    let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let runtime = Runtime::new().expect("a runtime");
    for (case, (name, block, count)) in CASES.into_iter().enumerate() {
        let bytes = block * count;
        // NIXL: the owner's blocks, each its own registration, and the reader's landing memory.
        let owner = Peer::ucx(&format!("owner-{case}"));
        let reader = Peer::ucx(&format!("reader-{case}"));
        let blocks: Vec<_> = (0..count)
            .map(|i| owner.storage(block, i as u64 + 1))
            .collect();
        let landing = reader.storage(bytes, 0);
        reader.load(&owner);
        let ranges: Vec<_> = blocks
            .iter()
            .enumerate()
            .map(|(slot, b)| (addr(&landing) + slot * block, addr(b), block))
            .collect();
        let remote = owner.agent.name();
        // The owner in the other process.
        let line = lines.next().expect("a line").expect("read");
        let mut words = line.split_whitespace();
        let md = unhex(words.next().expect("metadata"));
        let far = reader.agent.load_remote_md(&md).expect("loaded");
        let far_ranges: Vec<_> = words
            .enumerate()
            .map(|(slot, at)| {
                let at: usize = at.parse().expect("an address");
                (addr(&landing) + slot * block, at, block)
            })
            .collect();
        assert_eq!(far_ranges.len(), count);
        // TCP and NIXL hand-overs: the same blocks offered by a block server on loopback, here
        // and in the other process.
        let source = source_bytes(bytes);
        let handoff = serve_blocks(&runtime, &format!("source-{case}"), block, count);
        let served = lines.next().expect("a line").expect("read");
        let (address, transfer) = served.split_once(' ').expect("address and transfer");
        let far_handoff = KvHandoff {
            address: Some(address.to_owned()),
            transfer: transfer.parse().expect("a transfer id"),
            ..handoff.clone()
        };
        let fetch = TcpFetch::new(TcpFetchConfig::new(block, count)).expect("a client");
        let nixl_fetch = NixlFetch::new(
            NixlAgent::ucx(&format!("fetch-{case}")).expect("an agent"),
            TcpFetch::new(TcpFetchConfig::new(block, count)).expect("a client"),
            count,
        );
        let mut into = vec![0u8; bytes];

        let mut gbps = vec![Vec::new(); WAYS.len()];
        for round in 0..=rounds {
            for k in 0..WAYS.len() {
                let way = (round + k) % WAYS.len();
                let started = Instant::now();
                match way {
                    0 => into.copy_from_slice(&source),
                    1 | 2 => {
                        let (to, ranges) = if way == 1 {
                            (&remote, &ranges)
                        } else {
                            (&far, &far_ranges)
                        };
                        reader
                            .transfer(XferOp::Read, to, ranges, Duration::from_secs(30))
                            .expect("read over NIXL");
                    }
                    TCP => {
                        let fetched = runtime.block_on(fetch.fetch(&handoff)).expect("pulled");
                        assert_eq!(fetched.blocks, count);
                    }
                    _ => {
                        let handoff = if way == 4 { &handoff } else { &far_handoff };
                        let fetched = runtime
                            .block_on(nixl_fetch.fetch(handoff))
                            .expect("read over NIXL");
                        assert_eq!(fetched.blocks, count);
                        if round == 0 {
                            let mut got = vec![0; bytes];
                            let found = fetched
                                .store
                                .get_many(&handoff.blocks, &mut got)
                                .expect("read");
                            assert!(found.iter().all(|f| *f) && got == source);
                        }
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
                .all(|(i, c)| c == random_bytes(block, i as u64 + 1))
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
                "  {label:>17}: {:6.2} GB/s; / memcpy {:4.0}%; / tcp_fetch {:4.0}%",
                median(gbps[way].clone()),
                100.0 * ratio(0),
                100.0 * ratio(TCP)
            );
        }
    }
    drop(child.stdin.take());
    let _ = child.wait();
}
