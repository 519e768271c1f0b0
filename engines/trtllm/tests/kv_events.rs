//! TensorRT-LLM's KV events (`POST /kv_cache_events`) into the router's index, against a
//! stand-in server replaying answers written from TensorRT-LLM's source.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use dynamo_core::{
    BlockHasher, BlockSize, HashedBlock, KvEvent, KvEventData, SequenceHash, StorageTier, Token,
    WorkerId,
};
use dynamo_router::SharedIndex;
use dynamo_transport::engine_events::EngineEventDecoder;
use dynamo_trtllm::{EventsError, KvEventPoller, TrtllmEventDecoder, TrtllmServer};
use futures::StreamExt;
use rmpv::Value;
use support::server::{StandIn, fixture_body, trtllm_fixture};

/// The fixtures' `tokens_per_block`.
const BLOCK: u32 = 4;
/// The full blocks of the fixtures' first two stored events (a partial block of 34, 35 after).
const CHAIN: [Token; 12] = [1, 9690, 198, 2683, 359, 253, 3575, 282, 30, 31, 32, 33];
/// The root block stored after the gap.
const AFTER_GAP: [Token; 4] = [40, 41, 42, 43];
/// The chain of the offload fixtures' second request: its root block, then one stored in host
/// memory.
const SECOND: [Token; 8] = [40, 41, 42, 43, 44, 45, 46, 47];

fn block_size() -> BlockSize {
    BlockSize::new(BLOCK).expect("a block size")
}

fn sequence(tokens: &[Token]) -> Vec<SequenceHash> {
    BlockHasher::new(block_size()).sequence_hashes(tokens)
}

fn split(polled: Vec<Result<KvEvent, EventsError>>) -> (Vec<KvEvent>, Vec<EventsError>) {
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for item in polled {
        match item {
            Ok(event) => events.push(event),
            Err(problem) => problems.push(problem),
        }
    }
    (events, problems)
}

fn stored_blocks(event: &KvEvent) -> (Option<SequenceHash>, Vec<HashedBlock>) {
    match &event.data {
        KvEventData::Stored { parent, blocks, .. } => (*parent, blocks.clone()),
        other => panic!("not stored: {other:?}"),
    }
}

/// A stand-in server that answers `fixtures` in turn, a poller of it for worker 5, and a real
/// router index that the polled events go to.
struct Indexed {
    _server: StandIn,
    poller: KvEventPoller,
    index: SharedIndex,
}

impl Indexed {
    const WORKER: u64 = 5;

    async fn start(fixtures: &[&str]) -> Self {
        let server = StandIn::start(HashMap::new()).await;
        for fixture in fixtures {
            server.push_events(trtllm_fixture(fixture));
        }
        let poller = TrtllmServer::new(&server.url())
            .expect("a URL")
            .kv_event_poller(WorkerId::new(Self::WORKER), block_size());
        Indexed {
            _server: server,
            poller,
            index: SharedIndex::new(block_size()),
        }
    }

    /// One poll: its events, applied to the index (a removal of a block the index does not
    /// hold fails here), and the problems it reported.
    async fn poll(&mut self) -> (Vec<KvEvent>, Vec<EventsError>) {
        let (events, problems) = split(self.poller.poll_once().await.expect("an answer"));
        for event in &events {
            self.index.apply(event).expect("applied");
        }
        (events, problems)
    }

    /// [`Indexed::poll`] that reports no problem: its events.
    async fn poll_clean(&mut self) -> Vec<KvEvent> {
        let (events, problems) = self.poll().await;
        assert!(problems.is_empty(), "{problems:?}");
        events
    }

    /// How many leading blocks of `hashes` the index lists for the worker: on the device, and
    /// in host memory.
    fn held(&self, hashes: &[SequenceHash]) -> (u32, u32) {
        let overlap = self.index.overlaps(hashes).get(WorkerId::new(Self::WORKER));
        (overlap.device, overlap.host)
    }
}

/// vLLM's `BlockStored` for `tokens`' blocks, after `parent`, as its ZMQ publisher sends it.
fn vllm_stored(
    sequence: i64,
    hashes: &[u64],
    parent: Option<u64>,
    tokens: &[Token],
) -> Vec<Vec<u8>> {
    let event = Value::Array(vec![
        "BlockStored".into(),
        Value::Array(hashes.iter().map(|&h| Value::from(h)).collect()),
        parent.map_or(Value::Nil, Value::from),
        Value::Array(tokens.iter().map(|&t| Value::from(t)).collect()),
        Value::from(BLOCK),
        Value::Nil,
        "GPU".into(),
    ]);
    let batch = Value::Array(vec![
        Value::from(1.0),
        Value::Array(vec![event]),
        Value::from(0),
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &batch).expect("msgpack");
    vec![b"kv".to_vec(), sequence.to_be_bytes().to_vec(), payload]
}

#[test]
fn stored_blocks_get_the_hashes_the_vllm_path_gives_them() {
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(5), block_size());
    let (events, problems) =
        split(decoder.decode(fixture_body(&trtllm_fixture("kv_events_stored.http"))));
    assert!(problems.is_empty(), "{problems:?}");
    // created, then two stored events; the update is skipped.
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].data, KvEventData::Cleared);
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let (first_parent, first) = stored_blocks(&events[1]);
    let (second_parent, second) = stored_blocks(&events[2]);
    let ours = BlockHasher::new(block_size()).hash_blocks(&CHAIN);
    assert_eq!((first_parent, first.as_slice()), (None, &ours[..2]));
    assert_eq!(
        (second_parent, second.as_slice()),
        (Some(ours[1].sequence), &ours[2..])
    );

    // The same blocks announced in vLLM's layout, through the vLLM path's decoder.
    let mut vllm = EngineEventDecoder::new(WorkerId::new(5), block_size());
    let mut from_vllm = Vec::new();
    for message in [
        vllm_stored(0, &[11, 12], None, &CHAIN[..8]),
        vllm_stored(1, &[13], Some(12), &CHAIN[8..]),
    ] {
        let frames: Vec<&[u8]> = message.iter().map(Vec::as_slice).collect();
        from_vllm.extend(vllm.decode(&frames).expect("decoded").events);
    }
    assert_eq!(stored_blocks(&from_vllm[0]), (first_parent, first));
    assert_eq!(stored_blocks(&from_vllm[1]), (second_parent, second));

    let counts = decoder.counts();
    assert_eq!((counts.events, counts.applied), (4, 3));
    assert_eq!((counts.partial_blocks, counts.updated), (1, 1));
    // Every block at cache level 0: everything on the device, as before cache levels.
    assert!(events.iter().all(|e| e.tier == StorageTier::Device));
    assert_eq!((counts.moved, counts.unknown_levels), (0, 0));
}

#[tokio::test]
async fn the_index_follows_removals_gaps_bad_answers_and_a_restart() {
    let mut indexed = Indexed::start(&[
        "kv_events_stored.http",
        "kv_events_removed.http",
        "kv_events_gap.http",
        "kv_events_malformed.http",
        "kv_events_restart.http",
    ])
    .await;
    let chain = sequence(&CHAIN);
    let after_gap = sequence(&AFTER_GAP);

    // Stored: the three full blocks of the chain.
    assert!(indexed.poll().await.1.is_empty());
    assert_eq!(indexed.held(&chain).0, 3);
    // Removed: the third block (the partial one was never indexed); an unknown type skipped.
    assert!(indexed.poll().await.1.is_empty());
    assert_eq!(indexed.held(&chain).0, 2);
    // Events 6 to 8 were lost: reported; the stored event whose parent was lost is skipped,
    // the root block after it applies, and what the index knew stays.
    let problems = indexed.poll().await.1;
    assert!(
        matches!(
            problems.as_slice(),
            [EventsError::Lost {
                expected: 6,
                received: 9
            }]
        ),
        "{problems:?}"
    );
    assert_eq!((indexed.held(&chain).0, indexed.held(&after_gap).0), (2, 1));
    // An answer cut short: a typed error, nothing applied.
    let problems = indexed.poll().await.1;
    assert!(
        matches!(problems.as_slice(), [EventsError::Malformed { .. }]),
        "{problems:?}"
    );
    assert_eq!((indexed.held(&chain).0, indexed.held(&after_gap).0), (2, 1));
    // The server restarted (event ids from 0, a new cache): the index forgets its blocks.
    assert!(indexed.poll().await.1.is_empty());
    assert_eq!((indexed.held(&chain).0, indexed.held(&after_gap).0), (0, 0));

    let counts = indexed.poller.counts();
    assert_eq!((counts.gaps, counts.lost, counts.restarts), (1, 3, 1));
    assert_eq!((counts.unknown_parent, counts.unknown_removed), (1, 1));
    assert_eq!((counts.unknown_types, counts.malformed), (1, 1));
}

#[tokio::test]
async fn a_started_poller_goes_on_after_errors_and_stops_with_its_stream() {
    let server = StandIn::start(HashMap::new()).await;
    server.push_events(trtllm_fixture("kv_events_malformed.http"));
    server.push_events(b"HTTP/1.1 500 Internal Server Error\ncontent-type: text/plain; charset=utf-8\n\nInternal Server Error".to_vec());
    server.push_events(trtllm_fixture("kv_events_stored.http"));
    let (mut events, poll) = TrtllmServer::new(&server.url())
        .expect("a URL")
        .kv_event_poller(WorkerId::new(5), block_size())
        .interval(Duration::from_millis(10))
        .start();
    let poller = tokio::spawn(poll);
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an item within 10 s")
            .expect("the stream goes on")
    };
    assert!(matches!(next().await, Err(EventsError::Malformed { .. })));
    match next().await {
        Err(EventsError::Poll(error)) => {
            assert_eq!(error.class(), dynamo_core::ErrorClass::Internal, "{error}");
        }
        other => panic!("not the 500: {other:?}"),
    }
    assert_eq!(next().await.expect("created").data, KvEventData::Cleared);
    assert!(matches!(
        next().await.expect("stored").data,
        KvEventData::Stored { .. }
    ));
    assert!(matches!(
        next().await.expect("stored").data,
        KvEventData::Stored { .. }
    ));
    let counts = events.counts_view();
    drop(events);
    tokio::time::timeout(Duration::from_secs(10), poller)
        .await
        .expect("the poller stops once its stream is dropped")
        .expect("not panicked");
    assert_eq!(counts.borrow().malformed, 1);
}

#[test]
fn other_block_sizes_windows_and_multimodal_blocks_are_not_indexed() {
    let token = |id: u32, extra: u32| {
        format!(r#"{{"type":"unique_token","token_id":{id},"token_extra_id":{extra}}}"#)
    };
    let block = |hash: u64, tokens: &[(u32, u32)]| {
        let tokens: Vec<String> = tokens.iter().map(|&(id, extra)| token(id, extra)).collect();
        format!(
            r#"{{"type":"stored_block","block_hash":{hash},"tokens":[{}],"cache_level":0,"priority":35}}"#,
            tokens.join(",")
        )
    };
    let stored = |id: u64, window: u64, blocks: &[String]| {
        format!(
            r#"{{"event_id":{id},"data":{{"type":"stored","parent_hash":null,"blocks":[{}]}},"window_size":{window}}}"#,
            blocks.join(",")
        )
    };
    let eight: Vec<(u32, u32)> = (0..8).map(|t| (t, 0)).collect();
    let four: Vec<(u32, u32)> = (0..4).map(|t| (t, 0)).collect();
    let image: Vec<(u32, u32)> = (0..4).map(|t| (t, 9)).collect();
    let body = format!(
        "[{},{},{},{}]",
        stored(1, 4096, &[block(1, &eight)]),
        stored(2, 4096, &[block(2, &four), block(3, &image)]),
        stored(3, 512, &[block(4, &four)]),
        r#"{"event_id":4,"data":{"type":"removed"},"window_size":4096}"#,
    );
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(1), block_size());
    let (events, problems) = split(decoder.decode(body.as_bytes()));
    assert!(
        matches!(
            problems.as_slice(),
            [
                EventsError::BlockSizeMismatch { engine: 8, ours: 4 },
                EventsError::Malformed { .. }
            ]
        ),
        "{problems:?}"
    );
    // Only the text block of the second event, before the image block.
    assert_eq!(events.len(), 1);
    assert_eq!(stored_blocks(&events[0]).1.len(), 1);
    let counts = decoder.counts();
    assert_eq!(
        (
            counts.multimodal_blocks,
            counts.other_groups,
            counts.block_size_mismatches
        ),
        (1, 1, 1)
    );
    assert!(decoder.decode(b"not json").iter().all(Result::is_err));
}

/// `(tier, data)` of each event, for comparing whole answers.
fn changes(events: &[KvEvent]) -> Vec<(StorageTier, KvEventData)> {
    events.iter().map(|e| (e.tier, e.data.clone())).collect()
}

fn stored_in(
    tier: StorageTier,
    parent: Option<SequenceHash>,
    blocks: &[HashedBlock],
) -> (StorageTier, KvEventData) {
    let data = KvEventData::Stored {
        parent,
        block_size: block_size(),
        blocks: blocks.to_vec(),
    };
    (tier, data)
}

fn removed_in(tier: StorageTier, blocks: &[HashedBlock]) -> (StorageTier, KvEventData) {
    let blocks = blocks.iter().map(|b| b.sequence).collect();
    (tier, KvEventData::Removed { blocks })
}

#[test]
fn an_offloaded_block_moves_to_the_host_tier_after_its_parent() {
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(5), block_size());
    let (events, problems) =
        split(decoder.decode(fixture_body(&trtllm_fixture("kv_events_offload.http"))));
    assert!(problems.is_empty(), "{problems:?}");
    let chain = BlockHasher::new(block_size()).hash_blocks(&CHAIN);
    let second = BlockHasher::new(block_size()).hash_blocks(&SECOND);
    use StorageTier::{Device, Host};
    assert_eq!(
        changes(&events),
        [
            (Device, KvEventData::Cleared),
            stored_in(Device, None, &chain[..2]),
            stored_in(Device, Some(chain[1].sequence), &chain[2..]),
            // The third block offloaded (0 → 1): stored in host memory, then off the device.
            stored_in(Host, Some(chain[1].sequence), &chain[2..]),
            removed_in(Device, &chain[2..]),
            // Then its parent.
            stored_in(Host, Some(chain[0].sequence), &chain[1..2]),
            removed_in(Device, &chain[1..2]),
            stored_in(Device, None, &second[..1]),
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let counts = decoder.counts();
    assert_eq!((counts.events, counts.applied, counts.moved), (8, 8, 2));
    // A priority change, and a level change of a block never seen stored.
    assert_eq!((counts.updated, counts.unknown_updated), (1, 1));
}

#[tokio::test]
async fn the_router_sees_blocks_offloaded_onboarded_and_cleared_in_their_tiers() {
    let mut indexed = Indexed::start(&[
        "kv_events_offload.http",
        "kv_events_onboard.http",
        "kv_events_restart.http",
    ])
    .await;
    let chain = sequence(&CHAIN);
    let second = sequence(&SECOND);

    // Stored on the device, then the last two blocks of the chain offloaded to host memory:
    // the whole prefix is still cached, its first block on the device.
    indexed.poll_clean().await;
    assert_eq!(indexed.held(&chain), (1, 2));
    assert_eq!(indexed.held(&second), (1, 0));
    // The second request's root block offloaded, the chain's second block onboarded, its third
    // dropped from host memory, and a block stored in host memory after the offloaded root.
    indexed.poll_clean().await;
    assert_eq!(indexed.held(&chain), (2, 0));
    assert_eq!(indexed.held(&second), (0, 2));
    // A restarted server: both tiers cleared.
    let events = indexed.poll_clean().await;
    assert_eq!(
        changes(&events),
        [
            (StorageTier::Device, KvEventData::Cleared),
            (StorageTier::Host, KvEventData::Cleared),
            (StorageTier::Device, KvEventData::Cleared),
        ]
    );
    assert_eq!(
        (indexed.held(&chain), indexed.held(&second)),
        ((0, 0), (0, 0))
    );

    let counts = indexed.poller.counts();
    assert_eq!(
        (counts.moved, counts.updated, counts.unknown_updated),
        (4, 1, 1)
    );
    assert_eq!((counts.unknown_removed, counts.restarts), (0, 1));
}

#[test]
fn chains_split_by_level_and_unknown_levels_are_not_indexed() {
    let block = |hash: u64, first: u32, level: i64| {
        let tokens: Vec<String> = (first..first + 4)
            .map(|t| format!(r#"{{"type":"unique_token","token_id":{t},"token_extra_id":0}}"#))
            .collect();
        format!(
            r#"{{"type":"stored_block","block_hash":{hash},"tokens":[{}],"cache_level":{level},"priority":35}}"#,
            tokens.join(",")
        )
    };
    let event = |id: u64, data: String| format!(r#"{{"event_id":{id},"data":{data}}}"#);
    let stored = |parent: &str, blocks: &[String]| {
        format!(
            r#"{{"type":"stored","parent_hash":{parent},"blocks":[{}]}}"#,
            blocks.join(",")
        )
    };
    let updated = |hash: u64, old: i64, new: i64| {
        format!(
            r#"{{"type":"updated","block_hash":{hash},"cache_level":{{"type":"event_diff","new_value":{new},"old_value":{old}}},"priority":null}}"#
        )
    };
    let body = format!(
        "[{}]",
        [
            // A chain of blocks at levels 0, 1 and 2, then one at level 3, and one after it.
            event(
                1,
                stored("null", &[block(1, 0, 0), block(2, 4, 1), block(3, 8, 2)])
            ),
            event(2, stored("3", &[block(4, 12, 3), block(5, 16, 0)])),
            // Block 3 moved to a level with no tier: off the disk, and forgotten.
            event(3, updated(3, 2, 7)),
            event(4, r#"{"type":"removed","block_hashes":[3]}"#.to_owned()),
            // Block 1 stored again, in host memory: it left the device.
            event(5, stored("null", &[block(1, 0, 1)])),
            // An update that says the block came from another level than it was known at.
            event(6, updated(2, 0, 1)),
        ]
        .join(",")
    );
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(1), block_size());
    let (events, problems) = split(decoder.decode(body.as_bytes()));
    assert!(problems.is_empty(), "{problems:?}");
    let tokens: Vec<Token> = (0..20).collect();
    let ours = BlockHasher::new(block_size()).hash_blocks(&tokens);
    use StorageTier::{Device, Disk, Host};
    assert_eq!(
        changes(&events),
        [
            stored_in(Device, None, &ours[..1]),
            stored_in(Host, Some(ours[0].sequence), &ours[1..2]),
            stored_in(Disk, Some(ours[1].sequence), &ours[2..3]),
            removed_in(Disk, &ours[2..3]),
            stored_in(Host, None, &ours[..1]),
            removed_in(Device, &ours[..1]),
        ]
    );
    let counts = decoder.counts();
    assert_eq!(counts.unknown_levels, 2);
    assert_eq!(
        (counts.unknown_removed, counts.updated, counts.moved),
        (1, 1, 0)
    );
}

/// The branch of the subtree fixtures: the chain's first two blocks, then a block another
/// request stored after them.
const BRANCH: [Token; 12] = [1, 9690, 198, 2683, 359, 253, 3575, 282, 50, 51, 52, 53];

/// `kv_events_branch.http` then `fixture` through a decoder: the changes `fixture` makes, and
/// the decoder.
fn after_branch(fixture: &str) -> (Vec<(StorageTier, KvEventData)>, TrtllmEventDecoder) {
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(5), block_size());
    for (name, expected) in [("kv_events_branch.http", 6), (fixture, 0)] {
        let (events, problems) = split(decoder.decode(fixture_body(&trtllm_fixture(name))));
        assert!(problems.is_empty(), "{name}: {problems:?}");
        if expected == 0 {
            return (changes(&events), decoder);
        }
        assert_eq!(events.len(), expected, "{name}: {events:?}");
    }
    unreachable!("the second fixture returns")
}

#[test]
fn a_removed_block_takes_the_descendants_the_server_drops_without_events() {
    let chain = BlockHasher::new(block_size()).hash_blocks(&CHAIN);
    let branch = &BlockHasher::new(block_size()).hash_blocks(&BRANCH)[2..];
    use StorageTier::{Device, Host};
    let stored_again = stored_in(Device, Some(chain[0].sequence), &chain[1..2]);

    // The current KV cache manager names the reclaimed block only: its children, one on the
    // device and one offloaded to host memory, leave with it, each from its tier.
    let (changes, decoder) = after_branch("kv_events_subtree.http");
    assert_eq!(
        changes,
        [
            removed_in(Device, &[chain[1], branch[0]]),
            removed_in(Host, &chain[2..]),
            stored_again.clone(),
        ]
    );
    let counts = decoder.counts();
    assert_eq!((counts.descendants_removed, counts.unknown_removed), (2, 0));

    // Older versions name every block, children first, in one event: the same blocks leave.
    let (changes, decoder) = after_branch("kv_events_subtree_named.http");
    assert_eq!(
        changes,
        [
            removed_in(Device, &[branch[0], chain[1]]),
            removed_in(Host, &chain[2..]),
            stored_again.clone(),
        ]
    );
    let counts = decoder.counts();
    assert_eq!((counts.descendants_removed, counts.unknown_removed), (0, 0));

    // A child removed on its own first is not removed again with its parent.
    let (changes, decoder) = after_branch("kv_events_leaf_first.http");
    assert_eq!(
        changes,
        [
            removed_in(Device, branch),
            removed_in(Device, &chain[1..2]),
            removed_in(Host, &chain[2..]),
            stored_again,
        ]
    );
    let counts = decoder.counts();
    assert_eq!((counts.descendants_removed, counts.unknown_removed), (1, 0));
}

#[tokio::test]
async fn the_router_lists_no_descendant_of_a_removed_block_once_it_is_stored_again() {
    let chain = sequence(&CHAIN);
    let branch = sequence(&BRANCH);
    for (fixture, silent) in [
        ("kv_events_subtree.http", 2),
        ("kv_events_subtree_named.http", 0),
        ("kv_events_leaf_first.http", 1),
    ] {
        // A real index: a removal of a block it does not hold (one removed twice) would be
        // `IndexError::UnknownRemoval`, and fail the test here.
        let mut indexed = Indexed::start(&["kv_events_branch.http", fixture]).await;

        // The chain (its third block offloaded) and the branch after its second block.
        indexed.poll_clean().await;
        assert_eq!(
            (indexed.held(&chain), indexed.held(&branch)),
            ((2, 1), (3, 0)),
            "{fixture}"
        );
        // The second block reclaimed, its descendants with it, then stored again by a new
        // request: the prefix is two blocks on the device, and neither descendant is listed,
        // not even on its own.
        indexed.poll_clean().await;
        assert_eq!(
            (indexed.held(&chain), indexed.held(&branch)),
            ((2, 0), (2, 0)),
            "{fixture}"
        );
        assert_eq!(
            (indexed.held(&chain[2..]), indexed.held(&branch[2..])),
            ((0, 0), (0, 0)),
            "{fixture}"
        );
        let counts = indexed.poller.counts();
        assert_eq!(
            (counts.descendants_removed, counts.unknown_removed),
            (silent, 0),
            "{fixture}"
        );
    }
}

#[test]
fn a_block_moved_to_a_level_with_no_tier_leaves_with_its_descendants() {
    let mut decoder = TrtllmEventDecoder::new(WorkerId::new(5), block_size());
    let (_, problems) =
        split(decoder.decode(fixture_body(&trtllm_fixture("kv_events_branch.http"))));
    assert!(problems.is_empty(), "{problems:?}");
    // The chain's second block moved to a level 7 no TensorRT-LLM has: made up.
    let body = br#"[{"event_id":5,"data":{"type":"updated","block_hash":16045690984503098046,"cache_level":{"type":"event_diff","new_value":7,"old_value":0},"priority":null},"window_size":4096}]"#;
    let (events, problems) = split(decoder.decode(body));
    assert!(problems.is_empty(), "{problems:?}");
    let chain = BlockHasher::new(block_size()).hash_blocks(&CHAIN);
    let branch = &BlockHasher::new(block_size()).hash_blocks(&BRANCH)[2..];
    assert_eq!(
        changes(&events),
        [
            removed_in(StorageTier::Device, &[chain[1], branch[0]]),
            removed_in(StorageTier::Host, &chain[2..]),
        ]
    );
    let counts = decoder.counts();
    assert_eq!((counts.unknown_levels, counts.descendants_removed), (1, 2));
}
