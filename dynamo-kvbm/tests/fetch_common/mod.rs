//! What the transfer tests share: reading a fetch's blocks back.

use dynamo_core::KvHandoff;
use dynamo_kvbm::Fetched;

/// The first `fetched.blocks` blocks of `handoff` as read from `fetched`, all of them there.
pub(crate) fn read_back(fetched: &Fetched, handoff: &KvHandoff) -> Vec<u8> {
    let mut bytes = vec![0; fetched.blocks * fetched.store.block_bytes()];
    let found = fetched
        .store
        .get_many(&handoff.blocks[..fetched.blocks], &mut bytes)
        .expect("read");
    assert!(found.iter().all(|found| *found));
    bytes
}
