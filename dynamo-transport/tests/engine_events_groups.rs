//! KV events of vLLM's hybrid models, whose KV cache groups (full attention, sliding window,
//! Mamba) each store and remove blocks at their own block size: the decoder follows the
//! full-attention group at the router's block size and skips the others, counted.
//!
//! The fixtures are vLLM 0.34.0's layout, from its wheel (`vllm/distributed/kv_events.py`):
//! the batch an array (`EventBatch`, `array_like`), `[ts, events, data_parallel_rank]`; each event
//! a map (`KVCacheEvent`, `tag=True`, `omit_defaults`) in declaration order: `type`,
//! `block_hashes`, `parent_block_hash`, `token_ids`, `block_size`, `lora_id`, `medium`,
//! `lora_name` (always written), then `group_idx` and the kinds `kv_cache_spec_kind`,
//! `kv_cache_spec_sliding_window` (written when set); `BlockRemoved` is `type`,
//! `block_hashes`, `medium`, `group_idx`. What each group emits is read in the same wheel:
//! `vllm/v1/core/block_pool.py` (`cache_full_blocks`: one `BlockStored` per group and request,
//! `group_idx` the group, at the group's `block_size`, null and masked blocks left out of
//! `block_hashes` while `token_ids` spans them all; `_emit_block_removed_events`: one
//! `BlockRemoved` per hash with its group), `kv_cache_utils.py` (`resolve_block_hashes`: a group
//! whose blocks are k hash blocks long names each by the hash at its end, so one engine hash
//! names a block in two groups) and `kv_cache_manager.py` (`take_events` sets each stored
//! event's kind). The fixtures were checked by decoding them with msgspec 0.23 into the wheel's
//! own `KVEventBatch`.

use dynamo_core::{BlockHasher, BlockSize, KvEventData, WorkerId};
use dynamo_transport::Error;
use dynamo_transport::engine_events::{Decoded, EngineEventDecoder};

mod msgpack;

use msgpack::{NIL, float, list, map, small, string, tokens, uint};

/// The router's block size, and the full-attention group's.
fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// vLLM 0.34.0's batch: `[ts, events, data_parallel_rank]`.
fn batch(events: &[Vec<u8>]) -> Vec<u8> {
    list(&[float(1_700_000_000.5), list(events), small(0)])
}

/// One group's `BlockStored`, as vLLM 0.34.0 writes it: `kind` `None` leaves the kinds out (a
/// source that names groups only).
fn stored(
    hashes: &[u64],
    parent: Option<u64>,
    ids: &[u8],
    size: u8,
    group: u8,
    kind: Option<&str>,
) -> Vec<u8> {
    let hashes: Vec<Vec<u8>> = hashes.iter().map(|&h| uint(h)).collect();
    let mut fields = vec![
        ("type", string("BlockStored")),
        ("block_hashes", list(&hashes)),
        ("parent_block_hash", parent.map_or(vec![NIL], uint)),
        ("token_ids", tokens(ids)),
        ("block_size", small(size)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
        ("lora_name", vec![NIL]),
        ("group_idx", small(group)),
    ];
    if let Some(kind) = kind {
        fields.push(("kv_cache_spec_kind", string(kind)));
        if kind == "sliding_window" {
            fields.push(("kv_cache_spec_sliding_window", small(8)));
        }
    }
    map(&fields)
}

fn removed(hashes: &[u64], group: u8) -> Vec<u8> {
    let hashes: Vec<Vec<u8>> = hashes.iter().map(|&h| uint(h)).collect();
    map(&[
        ("type", string("BlockRemoved")),
        ("block_hashes", list(&hashes)),
        ("medium", string("GPU")),
        ("group_idx", small(group)),
    ])
}

/// Engine hashes of the prompt's 4-token blocks, as vLLM chains them at its hash block size (4).
const H: [u64; 4] = [0x1001, 0x1002, 0x1003, 0x1004];
/// The prompt: four blocks of 4.
const PROMPT: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// Full attention (group 0, blocks of 4), Mamba (group 1, blocks of 8, named by the hash at
/// each block's end: `H[1]`, `H[3]`) and a sliding window (group 2, blocks of 4, the blocks
/// that left the window null and out of `block_hashes`) storing the prompt, as one step of
/// vLLM 0.34.0 publishes it.
fn hybrid_step() -> Vec<u8> {
    batch(&[
        stored(&H, None, &PROMPT, 4, 0, Some("full_attention")),
        stored(&[H[1], H[3]], None, &PROMPT, 8, 1, Some("mamba")),
        stored(&H[2..], None, &PROMPT, 4, 2, Some("sliding_window")),
    ])
}

fn decode(
    decoder: &mut EngineEventDecoder,
    sequence: i64,
    payload: &[u8],
) -> Result<Decoded, Error> {
    decoder.decode(&[b"kv-events", &sequence.to_be_bytes(), payload])
}

fn decoder() -> EngineEventDecoder {
    EngineEventDecoder::new(WorkerId::new(1), block_size())
}

/// The stored blocks of `decoded`'s only event.
fn only_stored(decoded: &Decoded) -> &KvEventData {
    let [event] = decoded.events.as_slice() else {
        panic!("one event: {:?}", decoded.events);
    };
    &event.data
}

#[test]
fn the_full_attention_group_is_followed_and_the_others_skipped() {
    let mut decoder = decoder();
    let decoded = decode(&mut decoder, 0, &hybrid_step()).expect("decoded, not refused");
    let KvEventData::Stored { parent, blocks, .. } = only_stored(&decoded) else {
        panic!("stored: {decoded:?}");
    };
    let prompt: Vec<u32> = PROMPT.iter().copied().map(u32::from).collect();
    assert_eq!(*parent, None);
    assert_eq!(blocks, &BlockHasher::new(block_size()).hash_blocks(&prompt));
    assert_eq!(decoded.other_groups, 2, "Mamba's and the sliding window's");
}

#[test]
fn removals_resolve_in_the_followed_group_only() {
    let mut decoder = decoder();
    let stored = decode(&mut decoder, 0, &hybrid_step()).expect("decoded");
    let KvEventData::Stored { blocks, .. } = only_stored(&stored) else {
        panic!("stored: {stored:?}");
    };
    // Mamba drops its block H[1], the same engine hash as full attention's second block, which
    // full attention still holds.
    let other = decode(&mut decoder, 1, &batch(&[removed(&[H[1]], 1)])).expect("decoded");
    assert!(other.events.is_empty(), "{other:?}");
    assert_eq!((other.other_groups, other.unknown_removed), (1, 0));
    // Full attention drops it: our block goes.
    let ours = decode(&mut decoder, 2, &batch(&[removed(&[H[1]], 0)])).expect("decoded");
    assert_eq!(
        only_stored(&ours),
        &KvEventData::Removed {
            blocks: vec![blocks[1].sequence]
        }
    );
    assert_eq!((ours.other_groups, ours.unknown_removed), (0, 0));
}

#[test]
fn of_several_groups_at_our_block_size_the_first_full_attention_one_is_followed() {
    let mut decoder = decoder();
    // A sliding window listed first is not a candidate; of two full-attention groups (vLLM
    // splits a model's layers into groups of equal size), the first seen is followed, here and
    // in later messages.
    let first = batch(&[
        stored(&H[..2], None, &PROMPT[..8], 4, 2, Some("sliding_window")),
        stored(&H[..2], None, &PROMPT[..8], 4, 1, Some("full_attention")),
        stored(&H[..2], None, &PROMPT[..8], 4, 0, Some("full_attention")),
    ]);
    let decoded = decode(&mut decoder, 0, &first).expect("decoded");
    assert_eq!((decoded.events.len(), decoded.other_groups), (1, 2));
    let next = batch(&[
        stored(
            &H[2..],
            Some(H[1]),
            &PROMPT[8..],
            4,
            0,
            Some("full_attention"),
        ),
        stored(
            &H[2..],
            Some(H[1]),
            &PROMPT[8..],
            4,
            1,
            Some("full_attention"),
        ),
    ]);
    let decoded = decode(&mut decoder, 1, &next).expect("decoded");
    let KvEventData::Stored { blocks, .. } = only_stored(&decoded) else {
        panic!("stored: {decoded:?}");
    };
    let prompt: Vec<u32> = PROMPT.iter().copied().map(u32::from).collect();
    assert_eq!(
        blocks,
        &BlockHasher::new(block_size()).hash_blocks(&prompt)[2..]
    );
    assert_eq!(decoded.other_groups, 1);
}

#[test]
fn without_kinds_the_first_group_at_our_block_size_is_followed() {
    let mut decoder = decoder();
    let step = batch(&[
        stored(&[H[1], H[3]], None, &PROMPT, 8, 0, None),
        stored(&H, None, &PROMPT, 4, 1, None),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded");
    let KvEventData::Stored { blocks, .. } = only_stored(&decoded) else {
        panic!("stored: {decoded:?}");
    };
    assert_eq!(blocks.len(), 4, "group 1's four blocks");
    assert_eq!(decoded.other_groups, 1);
}

#[test]
fn a_full_attention_group_at_another_block_size_is_a_mismatch() {
    let mut decoder = decoder();
    let step = batch(&[
        stored(&[H[1], H[3]], None, &PROMPT, 8, 0, Some("full_attention")),
        stored(&[H[3]], None, &PROMPT, 16, 1, Some("mamba")),
    ]);
    let error = decode(&mut decoder, 0, &step).expect_err("no group at our block size");
    assert!(
        matches!(error, Error::BlockSizeMismatch { engine: 8, ours: 4 }),
        "{error}"
    );
    // A message of the other groups only is skipped, counted: nothing to follow in it.
    let mamba_only = batch(&[stored(&[H[3]], None, &PROMPT, 16, 1, Some("mamba"))]);
    let decoded = decode(&mut decoder, 1, &mamba_only).expect("decoded");
    assert_eq!((decoded.events.len(), decoded.other_groups), (0, 1));
}

#[test]
fn a_refused_message_chooses_no_group() {
    let mut decoder = decoder();
    // Group 1 would be followed, but the message is malformed: nothing of it stays, the choice
    // included, so group 0 of the next message is followed.
    let bad = batch(&[
        stored(&H, None, &PROMPT, 4, 1, Some("full_attention")),
        map(&[("type", string("BlockMoved"))]),
    ]);
    let error = decode(&mut decoder, 0, &bad).expect_err("an unknown event kind");
    assert!(
        matches!(error, Error::MalformedEngineEvent { .. }),
        "{error}"
    );
    let good = batch(&[stored(&H, None, &PROMPT, 4, 0, Some("full_attention"))]);
    let decoded = decode(&mut decoder, 1, &good).expect("decoded");
    assert_eq!((decoded.events.len(), decoded.other_groups), (1, 0));
    let later = batch(&[stored(&H, None, &PROMPT, 4, 1, Some("full_attention"))]);
    let decoded = decode(&mut decoder, 2, &later).expect("decoded");
    assert_eq!((decoded.events.len(), decoded.other_groups), (0, 1));
}

#[test]
fn events_without_a_group_decode_as_before() {
    let mut decoder = decoder();
    let plain = map(&[
        ("type", string("BlockStored")),
        ("block_hashes", list(&[uint(H[0])])),
        ("parent_block_hash", vec![NIL]),
        ("token_ids", tokens(&PROMPT[..4])),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
        ("lora_name", vec![NIL]),
    ]);
    let decoded = decode(&mut decoder, 0, &batch(&[plain])).expect("decoded");
    assert_eq!((decoded.events.len(), decoded.other_groups), (1, 0));
}
