//! [`KvExports`] against a reference model, and the landing store's accounting.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::SequenceHash;
use proptest::prelude::*;

use super::landing::Landing;
use super::*;
use crate::{BlockStore, Error};

const BLOCK: usize = 4;

/// A block's bytes: its hash, repeated.
fn bytes_of(hashes: &[SequenceHash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| [h.0 as u8; BLOCK]).collect()
}

fn hashes(ids: &[u64]) -> Vec<SequenceHash> {
    ids.iter().copied().map(SequenceHash).collect()
}

/// The exports as the docs describe them, with transfers as plain lists.
struct Model {
    capacity: usize,
    lease: u64,
    /// id → (blocks, expires at).
    transfers: BTreeMap<u64, (Vec<u64>, u64)>,
    next: u64,
    counters: ExportCounters,
}

impl Model {
    fn held(&self) -> HashSet<u64> {
        self.transfers
            .values()
            .flat_map(|(blocks, _)| blocks.iter().copied())
            .collect()
    }

    fn expire(&mut self, now: u64) {
        let before = self.transfers.len();
        self.transfers.retain(|_, (_, expires)| *expires > now);
        self.counters.expired += (before - self.transfers.len()) as u64;
    }

    fn fitting(&self, blocks: &[u64]) -> usize {
        let mut held = self.held();
        (0..=blocks.len())
            .take_while(|&n| {
                n == 0 || {
                    held.insert(blocks[n - 1]);
                    held.len() <= self.capacity
                }
            })
            .count()
            - 1
    }

    fn offer(&mut self, now: u64, blocks: &[u64]) -> (u64, Vec<u64>) {
        self.expire(now);
        while self.transfers.len() >= self.capacity.max(1)
            || (self.fitting(blocks) < blocks.len() && !self.transfers.is_empty())
        {
            self.transfers.pop_first();
            self.counters.dropped_for_room += 1;
        }
        let kept = blocks[..self.fitting(blocks)].to_vec();
        let id = self.next;
        self.next += 1;
        self.counters.refused_blocks += (blocks.len() - kept.len()) as u64;
        if !kept.is_empty() {
            self.counters.offered += 1;
            self.counters.offered_blocks += kept.len() as u64;
            self.transfers.insert(id, (kept.clone(), now + self.lease));
        }
        (id, kept)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Offer(Vec<u64>),
    Read(usize),
    Release(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop::collection::vec(1u64..12, 0..7).prop_map(Step::Offer),
        2 => (0usize..16).prop_map(Step::Read),
        1 => (0usize..16).prop_map(Step::Release),
        1 => (1u64..40).prop_map(Step::Wait),
    ]
}

proptest! {
    #[test]
    fn exports_keep_release_expire_and_make_room_as_the_model(
        capacity in 0usize..8,
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let start = Instant::now();
        let lease = 50;
        let exports = KvExports::new(BLOCK, capacity, Duration::from_millis(lease)).expect("exports");
        let mut model = Model {
            capacity,
            lease,
            transfers: BTreeMap::new(),
            next: 1,
            counters: ExportCounters::default(),
        };
        let (mut now, mut ids) = (0, Vec::new());
        for step in steps {
            let at = start + Duration::from_millis(now);
            match step {
                Step::Offer(blocks) => {
                    let offered = exports.offer_at(at, &hashes(&blocks), &bytes_of(&hashes(&blocks))).expect("offered");
                    let (id, kept) = model.offer(now, &blocks);
                    prop_assert_eq!(offered.transfer, id);
                    prop_assert_eq!(offered.blocks, hashes(&kept));
                    ids.push(id);
                }
                Step::Read(i) => {
                    let Some(&id) = ids.get(i) else { continue };
                    model.expire(now);
                    let blocks = model.transfers.get(&id).map(|(blocks, _)| hashes(blocks));
                    let asked = blocks.clone().unwrap_or_else(|| hashes(&[1]));
                    let mut into = vec![0; asked.len() * BLOCK];
                    match (exports.read_at(at, id, &asked, &mut into), blocks) {
                        (Ok(found), Some(blocks)) => {
                            prop_assert_eq!(found, blocks.len());
                            prop_assert_eq!(into, bytes_of(&blocks));
                            model.counters.pulled_blocks += found as u64;
                        }
                        (Err(Error::UnknownTransfer { transfer }), None) => prop_assert_eq!(transfer, id),
                        (answer, model) => prop_assert!(false, "{answer:?} where the model has {model:?}"),
                    }
                }
                Step::Release(i) => {
                    let Some(&id) = ids.get(i) else { continue };
                    let released = model.transfers.remove(&id).is_some();
                    model.counters.released += u64::from(released);
                    prop_assert_eq!(exports.release(id), released);
                }
                Step::Wait(ms) => {
                    now += ms;
                    exports.expire(start + Duration::from_millis(now));
                    model.expire(now);
                }
            }
            let held = model.held();
            prop_assert!(held.len() <= capacity);
            prop_assert_eq!(exports.len(), held.len());
            let store = exports.store();
            prop_assert!(held.iter().all(|&h| store.contains(SequenceHash(h))));
            prop_assert_eq!(exports.transfers(), model.transfers.len());
            let mut counters = model.counters;
            counters.pulled_bytes = counters.pulled_blocks * BLOCK as u64;
            prop_assert_eq!(exports.counters(), counters);
        }
    }

    #[test]
    fn landing_reservations_give_all_room_back(
        capacity in 0usize..6,
        pulls in prop::collection::vec((prop::collection::vec(1u64..8, 0..6), 0usize..6), 1..8),
    ) {
        let landing = Arc::new(Landing::new(BLOCK, capacity).expect("landing"));
        let store = landing.store();
        let mut held = Vec::new();
        for (blocks, keep) in pulls {
            let mut reservation = landing.reserve(&hashes(&blocks));
            let reserved = reservation.hashes().to_vec();
            prop_assert_eq!(&reserved[..], &hashes(&blocks)[..reserved.len()]);
            for &hash in &reserved {
                let mut block = landing.buffer();
                block.fill(hash.0 as u8);
                landing.place(hash, block.freeze());
            }
            reservation.truncate(keep);
            held.push(reservation);
            prop_assert!(landing.reserved() <= capacity);
            let distinct: HashSet<SequenceHash> = held.iter().flat_map(|r| r.hashes().to_vec()).collect();
            prop_assert_eq!(landing.reserved(), distinct.len());
            prop_assert_eq!(store.len(), distinct.len());
            for hash in distinct {
                let mut block = [0; BLOCK];
                prop_assert!(store.get(hash, &mut block).expect("a block's length"));
                prop_assert_eq!(block, [hash.0 as u8; BLOCK]);
            }
        }
        held.clear();
        prop_assert_eq!((landing.reserved(), store.len()), (0, 0));
    }
}

#[test]
fn exports_read_as_a_store_but_refuse_writes() {
    let exports = KvExports::new(BLOCK, 4, Duration::from_secs(1)).expect("exports");
    let blocks = hashes(&[1, 2]);
    let offered = exports.offer(&blocks, &bytes_of(&blocks)).expect("offered");
    let store = exports.store();
    let mut block = [0; BLOCK];
    assert!(store.get(SequenceHash(2), &mut block).expect("read"));
    assert_eq!(block, [2; BLOCK]);
    assert!(matches!(
        store.put(SequenceHash(3), &block),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        store.remove(SequenceHash(1)),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(
        exports
            .available(offered.transfer, &hashes(&[1, 2, 3]))
            .ok(),
        Some(2)
    );
    assert!(matches!(
        exports.offer(&blocks, &[0; 3]),
        Err(Error::BlockSize { .. })
    ));
    assert_eq!(exports.counters().pulled_blocks, 1);
}

#[test]
fn a_lease_ends_a_transfer_that_was_not_released() {
    let exports = KvExports::new(BLOCK, 4, Duration::from_secs(10)).expect("exports");
    let start = Instant::now();
    let blocks = hashes(&[1]);
    let offered = exports
        .offer_at(start, &blocks, &bytes_of(&blocks))
        .expect("offered");
    assert_eq!(exports.expire(start + Duration::from_secs(9)), 0);
    assert_eq!(exports.expire(start + Duration::from_secs(10)), 1);
    assert!(exports.is_empty());
    assert!(!exports.release(offered.transfer));
    assert_eq!(exports.counters().expired, 1);
}

#[tokio::test]
async fn settled_waits_for_the_last_live_transfer_to_be_released() {
    let exports = KvExports::new(BLOCK, 4, Duration::from_secs(60)).expect("exports");
    let first = exports.offer(&hashes(&[1]), &bytes_of(&hashes(&[1])));
    let second = exports.offer(&hashes(&[1, 2]), &bytes_of(&hashes(&[1, 2])));
    let (first, second) = (first.expect("offered"), second.expect("offered"));
    let settled = exports.settled();
    tokio::pin!(settled);
    assert!(futures::poll!(settled.as_mut()).is_pending());
    assert!(exports.release(first.transfer));
    assert!(futures::poll!(settled.as_mut()).is_pending(), "one is left");
    assert!(exports.release(second.transfer));
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("settled once both are released");
    assert!(exports.is_empty());
}

#[tokio::test]
async fn settled_ends_with_the_lease_of_a_transfer_nobody_releases() {
    let lease = Duration::from_millis(50);
    let exports = KvExports::new(BLOCK, 4, lease).expect("exports");
    exports.settled().await;
    let start = Instant::now();
    exports
        .offer(&hashes(&[1]), &bytes_of(&hashes(&[1])))
        .expect("offered");
    tokio::time::timeout(Duration::from_secs(10), exports.settled())
        .await
        .expect("settled when the lease ends");
    assert!(start.elapsed() >= lease, "{:?}", start.elapsed());
    assert_eq!(exports.counters().expired, 1);
}

#[test]
fn offer_with_writes_each_kept_block_it_does_not_hold_once_in_place() {
    let exports = KvExports::new(BLOCK, 4, Duration::from_secs(10)).expect("exports");
    let mut written = Vec::new();
    let mut fill = |i: usize, into: &mut [u8]| {
        written.push(i);
        into.fill(10 + i as u8);
    };
    let first = exports.offer_with(&hashes(&[1, 2]), &mut fill);
    // Blocks 1 and 2 are held: only 3 is written.
    let second = exports.offer_with(&hashes(&[1, 2, 3]), &mut fill);
    assert_eq!(second.blocks, hashes(&[1, 2, 3]));
    let mut bytes = [0; 3 * BLOCK];
    assert_eq!(
        exports
            .read(second.transfer, &second.blocks, &mut bytes)
            .ok(),
        Some(3)
    );
    let expected: Vec<u8> = [10u8, 11, 12].iter().flat_map(|&b| [b; BLOCK]).collect();
    assert_eq!(bytes[..], expected[..]);
    // Five blocks do not fit even alone: the older transfers go, the leading four are kept,
    // and the fifth is never asked for.
    let third = exports.offer_with(&hashes(&[5, 6, 7, 8, 9]), &mut fill);
    assert_eq!(written, [0, 1, 2, 0, 1, 2, 3]);
    assert_eq!(third.blocks, hashes(&[5, 6, 7, 8]));
    assert_eq!(exports.counters().refused_blocks, 1);
    assert!(!exports.release(first.transfer) && !exports.release(second.transfer));
    assert!(exports.release(third.transfer));
    assert!(exports.is_empty());
}

/// Each block `read_each` handed over: its position, address and bytes.
type Lent = Vec<(usize, *const u8, Vec<u8>)>;

/// The blocks `fetched` hands to `read_each` for `asked`, and how many it says it handed.
fn lent(fetched: &Fetched, asked: &[SequenceHash]) -> (Lent, usize) {
    let mut seen = Vec::new();
    let count = fetched
        .read_each(asked, |i, bytes| {
            seen.push((i, bytes.as_ptr(), bytes.to_vec()))
        })
        .expect("read");
    (seen, count)
}

#[test]
fn read_each_lends_the_exports_blocks_in_place() {
    let exports = Arc::new(KvExports::new(BLOCK, 4, Duration::from_secs(10)).expect("exports"));
    let prompt = hashes(&[1, 2, 3]);
    let handoff = exports
        .offer(&prompt, &bytes_of(&prompt))
        .expect("offered")
        .handoff(dynamo_core::WorkerId::new(1), None);
    let local = LocalExports::new();
    local.register(handoff.source, exports.clone());
    // Answered at once: the exports themselves.
    let fetched = futures::FutureExt::now_or_never(local.fetch(&handoff))
        .expect("ready")
        .expect("fetched");
    let held = exports.blocks(handoff.transfer, &prompt).expect("held");
    // Block 9 is not there: the leading two come, no further.
    let (seen, count) = lent(&fetched, &hashes(&[2, 3, 9, 1]));
    assert_eq!(count, 2);
    let expected = [
        (0, held[1].as_ptr(), vec![2; BLOCK]),
        (1, held[2].as_ptr(), vec![3; BLOCK]),
    ];
    assert_eq!(seen, expected, "the exports' own buffers, not copies");
    assert_eq!(exports.counters().pulled_blocks, 3 + 2);
}

#[test]
fn read_each_lends_landed_blocks_in_place_and_reads_other_stores_through_a_buffer() {
    let landing = Arc::new(Landing::new(BLOCK, 4).expect("landing"));
    let reservation = landing.reserve(&hashes(&[5, 6]));
    let mut pointers = Vec::new();
    for hash in hashes(&[5, 6]) {
        let mut block = landing.buffer();
        block.fill(hash.0 as u8);
        let block = block.freeze();
        pointers.push(block.as_ptr());
        landing.place(hash, block);
    }
    let landed = Fetched::landed(landing.store(), reservation);
    let (seen, count) = lent(&landed, &hashes(&[5, 6]));
    assert_eq!(count, 2);
    let at: Vec<*const u8> = seen.iter().map(|(_, at, _)| *at).collect();
    assert_eq!(at, pointers);
    drop(landed);
    assert_eq!(landing.reserved(), 0);

    // A store that is not a shelf: the same blocks, through a buffer of the caller's.
    let host = Arc::new(crate::HostStore::new(BLOCK, 4).expect("host"));
    for hash in hashes(&[7, 8]) {
        host.put(hash, &[hash.0 as u8; BLOCK]).expect("put");
    }
    let other = Fetched::new(host, 2);
    let (seen, count) = lent(&other, &hashes(&[7, 8, 9]));
    assert_eq!(count, 2);
    let bytes: Vec<(usize, Vec<u8>)> = seen.into_iter().map(|(i, _, b)| (i, b)).collect();
    assert_eq!(bytes, [(0, vec![7; BLOCK]), (1, vec![8; BLOCK])]);
}
