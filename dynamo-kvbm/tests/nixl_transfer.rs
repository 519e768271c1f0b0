//! The `nixl` feature against a real NIXL: two agents in one process, each with a UCX backend,
//! register host memory and exchange metadata, and one reads the other's blocks (a one-sided
//! READ, as a decode worker pulls a prefill worker's KV blocks) or writes into them.
//!
//! Where NIXL is not loaded the tests say so and pass, unless `DYNAMO_REQUIRE_NIXL=1`, where they
//! fail (CI sets it after unpacking NIXL's wheel). `.ci/run` shows the environment they need.

mod nixl_common;

use std::time::Duration;

use nixl_common::{Peer, XferError, addr, nixl_or_skip, random_bytes};
use nixl_sys::XferOp;

/// SmolLM2-135M's KV for 64 tokens in f32, the disk tier's small block (docs/kvbm.md).
const BLOCK: usize = 2_949_120;
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_peer_reads_a_batch_of_blocks_byte_exact() {
    if !nixl_or_skip("a_peer_reads_a_batch_of_blocks_byte_exact") {
        return;
    }
    let (owner, reader) = (Peer::ucx("owner-batch"), Peer::ucx("reader-batch"));
    let blocks: Vec<_> = (1..=4u64).map(|i| owner.storage(BLOCK, i)).collect();
    let landing = reader.storage(4 * BLOCK, 0);
    reader.load(&owner);
    // One request, one descriptor per block, landing in reverse order.
    let ranges: Vec<_> = blocks
        .iter()
        .rev()
        .enumerate()
        .map(|(slot, block)| (addr(&landing) + slot * BLOCK, addr(block), BLOCK))
        .collect();
    reader
        .transfer(XferOp::Read, "owner-batch", &ranges, LIMIT)
        .expect("read");
    for (slot, chunk) in landing.as_slice().chunks(BLOCK).enumerate() {
        let seed = 4 - slot as u64;
        assert!(chunk == random_bytes(BLOCK, seed), "slot {slot}");
    }
}

#[test]
fn a_peer_reads_part_of_a_block_and_writes_into_one() {
    if !nixl_or_skip("a_peer_reads_part_of_a_block_and_writes_into_one") {
        return;
    }
    let (owner, peer) = (Peer::ucx("owner-rw"), Peer::ucx("peer-rw"));
    let block = owner.storage(BLOCK, 0x5a);
    let written = random_bytes(BLOCK, 0x5a);
    let local = peer.storage(BLOCK, 0);
    peer.load(&owner);
    let half = BLOCK / 2;
    peer.transfer(
        XferOp::Read,
        "owner-rw",
        &[(addr(&local), addr(&block) + half, half)],
        LIMIT,
    )
    .expect("read");
    let (read, untouched) = local.as_slice().split_at(half);
    assert!(read == &written[half..]);
    assert!(untouched.iter().all(|b| *b == 0));

    let source = peer.storage(BLOCK, 0xc3);
    peer.transfer(
        XferOp::Write,
        "owner-rw",
        &[(addr(&source), addr(&block), BLOCK)],
        LIMIT,
    )
    .expect("written");
    assert!(block.as_slice() == random_bytes(BLOCK, 0xc3));
}

#[test]
fn a_range_past_the_owners_registered_block_is_refused() {
    if !nixl_or_skip("a_range_past_the_owners_registered_block_is_refused") {
        return;
    }
    let (owner, reader) = (Peer::ucx("owner-past"), Peer::ucx("reader-past"));
    let block = owner.storage(BLOCK, 1);
    let landing = reader.storage(BLOCK, 0);
    reader.load(&owner);
    let straddling = [(addr(&landing), addr(&block) + BLOCK / 2, BLOCK)];
    let refused = reader.transfer(XferOp::Read, "owner-past", &straddling, LIMIT);
    assert!(matches!(refused, Err(XferError::Refused(_))), "{refused:?}");
    let unknown = reader.transfer(
        XferOp::Read,
        "nobody",
        &[(addr(&landing), addr(&block), 8)],
        LIMIT,
    );
    assert!(matches!(unknown, Err(XferError::Refused(_))), "{unknown:?}");
    assert!(landing.as_slice().iter().all(|b| *b == 0));
}

#[test]
fn a_block_the_owner_deregistered_is_refused_once_the_reader_reloads_metadata() {
    if !nixl_or_skip("a_block_the_owner_deregistered_is_refused_once_the_reader_reloads_metadata") {
        return;
    }
    let (owner, reader) = (Peer::ucx("owner-gone"), Peer::ucx("reader-gone"));
    let kept = owner.storage(BLOCK, 7);
    let removed = owner.storage(BLOCK, 9);
    let landing = reader.storage(BLOCK, 0);
    reader.load(&owner);
    let at = addr(&removed);
    reader
        .transfer(
            XferOp::Read,
            "owner-gone",
            &[(addr(&landing), at, BLOCK)],
            LIMIT,
        )
        .expect("read while registered");
    assert!(landing.as_slice() == random_bytes(BLOCK, 9));
    // Dropping a `NixlRegion` deregisters it (and frees it). NIXL does not tell the reader:
    // it refuses the range only once the reader has loaded the owner's metadata again.
    drop(removed);
    let stale = reader.request(XferOp::Read, "owner-gone", &[(addr(&landing), at, BLOCK)]);
    assert!(stale.is_ok(), "NIXL noticed by itself: {:?}", stale.err());
    drop(stale); // never posted: the range is freed
    reader.load(&owner);
    let refused = reader.transfer(
        XferOp::Read,
        "owner-gone",
        &[(addr(&landing), at, BLOCK)],
        LIMIT,
    );
    assert!(matches!(refused, Err(XferError::Refused(_))), "{refused:?}");
    reader
        .transfer(
            XferOp::Read,
            "owner-gone",
            &[(addr(&landing), addr(&kept), BLOCK)],
            LIMIT,
        )
        .expect("the kept block still reads");
    assert!(landing.as_slice() == random_bytes(BLOCK, 7));
}
