//! The `nixl` feature against a real NIXL: two agents in one process, each with a UCX backend,
//! register host memory, exchange metadata, and one reads blocks from the other (one-sided READ,
//! as a decode worker pulls a prefill worker's KV blocks).
//!
//! Where NIXL is not loaded the tests say so and pass, unless `DYNAMO_REQUIRE_NIXL=1`, where they
//! fail (CI sets it after unpacking NIXL's wheel, so that CI cannot skip them silently).

use std::time::{Duration, Instant};

use nixl_sys::{
    Agent, MemType, NixlRegistration, OptArgs, SystemStorage, XferDescList, XferOp, XferStatus,
};

/// Whether NIXL is loaded; `false` means skip. Panics where `DYNAMO_REQUIRE_NIXL=1` and it is not.
fn nixl_or_skip(test: &str) -> bool {
    if dynamo_kvbm::is_nixl_loaded() {
        return true;
    }
    assert!(
        std::env::var("DYNAMO_REQUIRE_NIXL").as_deref() != Ok("1"),
        "DYNAMO_REQUIRE_NIXL=1 but libnixl_capi.so is not loaded (LD_LIBRARY_PATH)"
    );
    eprintln!("{test}: NIXL is not loaded in this process; skipped");
    false
}

fn agent_with_ucx(name: &str) -> (Agent, OptArgs) {
    let agent = Agent::new(name).expect("agent");
    let (_mems, params) = agent
        .get_plugin_params("UCX")
        .expect("UCX plugin (NIXL_PLUGIN_DIR)");
    let backend = agent.create_backend("UCX", &params).expect("UCX backend");
    let mut args = OptArgs::new().expect("opt args");
    args.add_backend(&backend).expect("add backend");
    (agent, args)
}

fn addr(storage: &SystemStorage) -> usize {
    storage.as_slice().as_ptr() as usize
}

#[test]
fn a_peer_reads_blocks_over_ucx_byte_exact() {
    if !nixl_or_skip("a_peer_reads_blocks_over_ucx_byte_exact") {
        return;
    }
    const BLOCK: usize = 2_949_120;
    let (owner, owner_args) = agent_with_ucx("owner");
    let (reader, reader_args) = agent_with_ucx("reader");
    let mut blocks: Vec<SystemStorage> = (0..3u8)
        .map(|i| {
            let mut s = SystemStorage::new(BLOCK).expect("storage");
            s.memset(0x11 * (i + 1));
            s.register(&owner, Some(&owner_args))
                .expect("register owner block");
            s
        })
        .collect();
    let mut landing = SystemStorage::new(3 * BLOCK).expect("landing");
    landing
        .register(&reader, Some(&reader_args))
        .expect("register landing");
    let md = owner.get_local_md().expect("owner md");
    let remote = reader.load_remote_md(&md).expect("load owner md");
    assert_eq!(remote, "owner");
    let mut local = XferDescList::new(MemType::Dram).expect("local list");
    let mut far = XferDescList::new(MemType::Dram).expect("remote list");
    // Batch in reverse order, to show block granularity.
    for (slot, block) in blocks.iter_mut().rev().enumerate() {
        local.add_desc(addr(&landing) + slot * BLOCK, BLOCK, 0);
        far.add_desc(addr(block), BLOCK, 0);
    }
    let req = reader
        .create_xfer_req(XferOp::Read, &local, &far, "owner", Some(&reader_args))
        .expect("xfer req");
    let started = Instant::now();
    let mut pending = reader
        .post_xfer_req(&req, Some(&reader_args))
        .expect("post");
    while pending {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "transfer timed out"
        );
        pending = reader.get_xfer_status(&req).expect("status") == XferStatus::InProgress;
        std::thread::yield_now();
    }
    let got = landing.as_slice();
    for (slot, want) in [0x33u8, 0x22, 0x11].into_iter().enumerate() {
        assert!(
            got[slot * BLOCK..(slot + 1) * BLOCK]
                .iter()
                .all(|b| *b == want)
        );
    }
}
