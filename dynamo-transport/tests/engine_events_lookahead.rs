//! vLLM's lookahead hashing: stored blocks whose engine hash covers tokens past them are
//! indexed on their own tokens, as any other store.
//!
//! vLLM 0.34.0 hashes each block with the `L` tokens after it when it runs an EAGLE-style
//! drafter (EAGLE, EAGLE3, MTP) with prefix caching and `disable_lookahead_block_hashes` unset
//! (`vllm/config/vllm.py`, `_resolve_num_hash_lookahead_tokens`: `L` is the drafter's
//! `num_prefill_lookahead_tokens`). `kv_cache_utils.get_request_block_hasher` adds those tokens
//! to each block's extra keys, so a request reuses a cached block only when its tokens after
//! the block match too (`KVCacheManager.get_computed_blocks` looks the request's own hashes
//! up). The stored events carry them: `BlockStored.lookahead_token_ids`, one list per
//! `block_hashes` entry (`block_pool.py`, `cache_full_blocks` and `emit_cached_block_events`,
//! `get_lookahead_token_ids`; the offloading connector's self-describing stores the same,
//! `offloading/events.py` `_lookahead_tokens`). The router matches a request block by block
//! on the block's own tokens, so for a request whose tokens after its last matched block
//! differ from those (or whose prompt ends there) it counts that one block more than the
//! server reuses; the blocks before it the server reuses too.
//!
//! The fixtures are byte for byte what msgspec 0.23 writes for the 0.34.0 wheel's own
//! `KVEventBatch` of these events (`vllm/distributed/kv_events.py`: the batch `array_like`,
//! each event a map with a map16 header, since `BlockStored` has 16 fields with its tag,
//! fields at their default left out; `extra_keys` one nil per block for a plain request, as
//! `to_event_extra_keys` writes it).

use dynamo_core::{BlockHasher, BlockSize, HashedBlock, KvEventData, StorageTier, WorkerId};
use dynamo_transport::engine_events::{Decoded, EngineEventDecoder};

mod msgpack;

use msgpack::{NIL, float, list, map, map16, small, string, tokens, uint};

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// Engine hashes of a prompt's three blocks, and of the block after them.
const H: [u64; 4] = [
    0x7a11_0000_0000_0001,
    0x7a11_0000_0000_0002,
    0x7a11_0000_0000_0003,
    0x7a11_0000_0000_0004,
];
/// The engine hash of a block a server without lookahead would store.
const PLAIN: u64 = 0x5e00_0000_0000_0001;

/// One scheduler step: the prompt `1..=12` stored with lookahead 1 (`lookahead_token_ids`
/// `[[5], [9], [13]]`), and a block `21..=24` stored without it.
const STEP: &str = "93cb41d954fc4020000092de000ca474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657393cf7a11000000000001cf7a11000000000002cf7a11000000000003b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f6964739c0102030405060708090a0b0caa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0aa65787472615f6b65797393c0c0c0a967726f75705f69647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6eb36c6f6f6b61686561645f746f6b656e5f6964739391059109910dde000ba474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657391cf5e00000000000001b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f6964739415161718aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0aa65787472615f6b65797391c0a967726f75705f69647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6e00";

/// The next step: the prompt's fourth block (`13..=16`, lookahead `[[17]]`) after its third,
/// the first two blocks offloaded to CPU by the offloading connector's self-describing store
/// (with their lookahead, `locality` `LOCAL`), and the first block evicted from the GPU.
const AFTER: &str = "93cb41d954fc4020000093de000ca474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657391cf7a11000000000004b1706172656e745f626c6f636b5f68617368cf7a11000000000003a9746f6b656e5f696473940d0e0f10aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0aa65787472615f6b65797391c0a967726f75705f69647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6eb36c6f6f6b61686561645f746f6b656e5f696473919111de000ca474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657392cf7a11000000000001cf7a11000000000002b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f696473980102030405060708aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3435055a96c6f72615f6e616d65c0a967726f75705f69647800b26b765f63616368655f737065635f6b696e64ae66756c6c5f617474656e74696f6ea86c6f63616c697479a54c4f43414cb36c6f6f6b61686561645f746f6b656e5f696473929105910984a474797065ac426c6f636b52656d6f766564ac626c6f636b5f68617368657391cf7a11000000000001a66d656469756da3475055a967726f75705f6964780000";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

/// vLLM 0.34.0's batch: `[ts, events, data_parallel_rank]`.
fn batch(events: &[Vec<u8>]) -> Vec<u8> {
    list(&[float(1_700_000_000.5), list(events), small(0)])
}

fn hashes(hashes: &[u64]) -> Vec<u8> {
    list(&hashes.iter().map(|&h| uint(h)).collect::<Vec<_>>())
}

/// The GPU block pool's `BlockStored` (group 0, full attention, one nil extra key per block),
/// with `lookahead` the tokens after each block when the server hashes with them.
fn stored(blocks: &[u64], parent: Option<u64>, ids: &[u8], lookahead: Option<&[&[u8]]>) -> Vec<u8> {
    let mut fields = vec![
        ("type", string("BlockStored")),
        ("block_hashes", hashes(blocks)),
        ("parent_block_hash", parent.map_or(vec![NIL], uint)),
        ("token_ids", tokens(ids)),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
        ("lora_name", vec![NIL]),
        ("extra_keys", list(&vec![vec![NIL]; blocks.len()])),
        ("group_idx", small(0)),
        ("kv_cache_spec_kind", string("full_attention")),
    ];
    if let Some(lookahead) = lookahead {
        fields.push(("lookahead_token_ids", per_block(lookahead)));
    }
    map16(&fields)
}

/// The offloading connector's self-describing store of a chunk in CPU memory.
fn offloaded(blocks: &[u64], ids: &[u8], lookahead: &[&[u8]]) -> Vec<u8> {
    map16(&[
        ("type", string("BlockStored")),
        ("block_hashes", hashes(blocks)),
        ("parent_block_hash", vec![NIL]),
        ("token_ids", tokens(ids)),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("CPU")),
        ("lora_name", vec![NIL]),
        ("group_idx", small(0)),
        ("kv_cache_spec_kind", string("full_attention")),
        ("locality", string("LOCAL")),
        ("lookahead_token_ids", per_block(lookahead)),
    ])
}

/// `lookahead_token_ids`: a list of tokens per block.
fn per_block(lookahead: &[&[u8]]) -> Vec<u8> {
    list(&lookahead.iter().map(|ids| tokens(ids)).collect::<Vec<_>>())
}

fn removed(blocks: &[u64]) -> Vec<u8> {
    map(&[
        ("type", string("BlockRemoved")),
        ("block_hashes", hashes(blocks)),
        ("medium", string("GPU")),
        ("group_idx", small(0)),
    ])
}

fn prompt() -> Vec<u8> {
    (1..=12).collect()
}

fn decode(decoder: &mut EngineEventDecoder, sequence: i64, payload: &[u8]) -> Decoded {
    decoder
        .decode(&[b"kv-events", &sequence.to_be_bytes(), payload])
        .expect("decoded, not refused")
}

#[test]
fn the_fixtures_are_the_bytes_msgspec_writes() {
    let step = batch(&[
        stored(&H[..3], None, &prompt(), Some(&[&[5], &[9], &[13]])),
        stored(&[PLAIN], None, &[21, 22, 23, 24], None),
    ]);
    assert_eq!(step, hex(STEP));
    let after = batch(&[
        stored(&H[3..], Some(H[2]), &[13, 14, 15, 16], Some(&[&[17]])),
        offloaded(&H[..2], &prompt()[..8], &[&[5], &[9]]),
        removed(&H[..1]),
    ]);
    assert_eq!(after, hex(AFTER));
}

#[test]
fn blocks_hashed_with_lookahead_are_indexed_on_their_own_tokens() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    let hasher = BlockHasher::new(block_size());
    let ours = hasher.hash_blocks(&(1..=16).collect::<Vec<u32>>());
    let stored_in = |tier, parent, blocks: &[HashedBlock]| {
        (
            tier,
            KvEventData::Stored {
                parent,
                block_size: block_size(),
                blocks: blocks.to_vec(),
            },
        )
    };
    // The prompt stored with lookahead and a block stored without it, both indexed.
    let step = decode(&mut decoder, 0, &hex(STEP));
    assert_eq!(
        changes(&step),
        [
            stored_in(StorageTier::Device, None, &ours[..3]),
            stored_in(
                StorageTier::Device,
                None,
                &hasher.hash_blocks(&[21, 22, 23, 24])
            ),
        ]
    );
    assert_eq!(
        [
            step.tokenless,
            step.unknown_parent,
            step.misaligned,
            step.unknown_medium
        ],
        [0; 4]
    );

    // Its child follows it, the offloaded copy lands in host memory, and the eviction takes
    // the first block from the GPU only.
    let after = decode(&mut decoder, 1, &hex(AFTER));
    assert_eq!(
        changes(&after),
        [
            stored_in(StorageTier::Device, Some(ours[2].sequence), &ours[3..]),
            stored_in(StorageTier::Host, None, &ours[..2]),
            (
                StorageTier::Device,
                KvEventData::Removed {
                    blocks: vec![ours[0].sequence],
                }
            ),
        ]
    );
    assert_eq!(
        [after.unknown_removed, after.unknown_parent, after.tokenless],
        [0; 3]
    );
}

fn changes(decoded: &Decoded) -> Vec<(StorageTier, KvEventData)> {
    decoded
        .events
        .iter()
        .map(|event| (event.tier, event.data.clone()))
        .collect()
}

#[test]
fn empty_lookahead_lists_hash_nothing_past_the_blocks() {
    // A server without lookahead leaves the field out (nil, its default); lists without a
    // token cover nothing past their blocks either, and are indexed.
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    let empty = batch(&[stored(&H[..1], None, &[1, 2, 3, 4], Some(&[&[]]))]);
    let decoded = decode(&mut decoder, 0, &empty);
    assert_eq!(decoded.events.len(), 1);
}
