//! KV events the decoder once refused with their whole message, and now takes or skips one by
//! one, counted: vLLM's offloaded blocks named by their hash alone, stores after a parent it
//! does not know, stores whose token ids do not fill their blocks; and blocks that live in more
//! than one tier, removed from each on its own.
//!
//! The fixtures are vLLM 0.34.0's layout, read in its wheel: the batch an array
//! (`vllm/distributed/kv_events.py`, `EventBatch`, `array_like`), `[ts, events, rank]`, the
//! events maps (`tag=True`, `omit_defaults`: the fields without a default always written, in
//! declaration order, the others only when set). Its scheduler publishes the GPU block pool's
//! events and the KV connector's in one batch (`vllm/v1/core/sched/scheduler.py`, after
//! `kv_cache_manager.take_events()`). The offloading connector's stores
//! (`vllm/distributed/kv_transfer/kv_connector/v1/offloading/events.py`,
//! `_placeholder_stored`, what it publishes unless `self_describing_kv_events` is set) name
//! one offloaded chunk by the hash of its last GPU block, with `token_ids` `[]`,
//! `parent_block_hash` nil, `block_size` 0, the medium `CPU` (or `STORAGE`) and the chunk's
//! `group_idx`; its removals are `BlockRemoved` with the same hash and medium. vLLM's older
//! offloading connector (`offloading_connector.py`'s `take_events`, when events were arrays)
//! wrote the same store as an array with the offloaded block size instead of 0.

use dynamo_core::{BlockHasher, BlockSize, HashedBlock, KvEventData, StorageTier, WorkerId};
use dynamo_transport::Error;
use dynamo_transport::engine_events::{Decoded, EngineEventDecoder};

mod msgpack;

use msgpack::{NIL, float, list, map, small, string, tokens, uint};

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// Engine hashes of the prompt's three 4-token blocks.
const H: [u64; 3] = [0x2001, 0x2002, 0x2003];
/// The prompt: three blocks of 4.
const PROMPT: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn batch(events: &[Vec<u8>]) -> Vec<u8> {
    list(&[float(1_700_000_000.5), list(events), small(0)])
}

fn hashes(hashes: &[u64]) -> Vec<u8> {
    list(&hashes.iter().map(|&h| uint(h)).collect::<Vec<_>>())
}

/// The GPU block pool's `BlockStored` of a full-attention model (group 0).
fn stored(blocks: &[u64], parent: Option<u64>, ids: &[u8]) -> Vec<u8> {
    map(&[
        ("type", string("BlockStored")),
        ("block_hashes", hashes(blocks)),
        ("parent_block_hash", parent.map_or(vec![NIL], uint)),
        ("token_ids", tokens(ids)),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
        ("lora_name", vec![NIL]),
        ("group_idx", small(0)),
        ("kv_cache_spec_kind", string("full_attention")),
    ])
}

/// The offloading connector's store of one chunk in `medium`: its last block's hash alone.
fn offloaded(hash: u64, medium: &str) -> Vec<u8> {
    map(&[
        ("type", string("BlockStored")),
        ("block_hashes", hashes(&[hash])),
        ("parent_block_hash", vec![NIL]),
        ("token_ids", tokens(&[])),
        ("block_size", small(0)),
        ("lora_id", vec![NIL]),
        ("medium", string(medium)),
        ("lora_name", vec![NIL]),
        ("group_idx", small(0)),
    ])
}

fn removed(blocks: &[u64], medium: &str) -> Vec<u8> {
    map(&[
        ("type", string("BlockRemoved")),
        ("block_hashes", hashes(blocks)),
        ("medium", string(medium)),
        ("group_idx", small(0)),
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

/// Our blocks of the prompt.
fn ours() -> Vec<HashedBlock> {
    let prompt: Vec<u32> = PROMPT.iter().copied().map(u32::from).collect();
    BlockHasher::new(block_size()).hash_blocks(&prompt)
}

/// `decoded`'s events as (tier, data).
fn changes(decoded: &Decoded) -> Vec<(StorageTier, KvEventData)> {
    decoded
        .events
        .iter()
        .map(|event| (event.tier, event.data.clone()))
        .collect()
}

/// The counts of what `decoded` skipped: tokenless, unknown parent, misaligned, unknown
/// removed.
fn skipped(decoded: &Decoded) -> [usize; 4] {
    [
        decoded.tokenless,
        decoded.unknown_parent,
        decoded.misaligned,
        decoded.unknown_removed,
    ]
}

#[test]
fn an_offloaded_block_is_stored_in_host_memory_by_its_hash() {
    let mut decoder = decoder();
    let ours = ours();
    // One scheduler step: the prompt stored on the GPU, its second block offloaded, and a
    // chunk the decoder never saw stored (offloaded before it subscribed).
    let step = batch(&[
        stored(&H, None, &PROMPT),
        offloaded(H[1], "CPU"),
        offloaded(0x9999, "CPU"),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded, not refused");
    assert_eq!(
        changes(&decoded),
        [
            (
                StorageTier::Device,
                KvEventData::Stored {
                    parent: None,
                    block_size: block_size(),
                    blocks: ours.clone(),
                }
            ),
            (
                StorageTier::Host,
                KvEventData::Stored {
                    parent: Some(ours[0].sequence),
                    block_size: block_size(),
                    blocks: vec![ours[1]],
                }
            ),
        ]
    );
    assert_eq!(skipped(&decoded), [1, 0, 0, 0], "the unknown chunk");
    // The same chunk offloaded again changes nothing.
    let again = decode(&mut decoder, 1, &batch(&[offloaded(H[1], "CPU")])).expect("decoded");
    assert_eq!((again.events.len(), skipped(&again)), (0, [0; 4]));
}

#[test]
fn offloaded_chains_are_stored_as_chains() {
    let mut decoder = decoder();
    let ours = ours();
    let step = batch(&[
        stored(&H, None, &PROMPT),
        offloaded(H[0], "CPU"),
        offloaded(H[1], "CPU"),
        offloaded(H[2], "STORAGE"),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded");
    let tiers: Vec<StorageTier> = decoded.events.iter().map(|event| event.tier).collect();
    // Each store is its own event (one hash each); STORAGE is the disk tier.
    use StorageTier::{Device, Disk, Host};
    assert_eq!(tiers, [Device, Host, Host, Disk]);
    let KvEventData::Stored { parent, blocks, .. } = &decoded.events[2].data else {
        panic!("{decoded:?}");
    };
    assert_eq!(
        (*parent, blocks.as_slice()),
        (Some(ours[0].sequence), &ours[1..2])
    );
}

#[test]
fn a_block_leaves_each_tier_on_its_own() {
    let mut decoder = decoder();
    let ours = ours();
    let step = batch(&[stored(&H, None, &PROMPT), offloaded(H[2], "CPU")]);
    decode(&mut decoder, 0, &step).expect("decoded");
    // The GPU copy is evicted: the host copy stays, and is removed later by its own event.
    let evicted = decode(&mut decoder, 1, &batch(&[removed(&[H[2]], "GPU")])).expect("decoded");
    assert_eq!(
        changes(&evicted),
        [(
            StorageTier::Device,
            KvEventData::Removed {
                blocks: vec![ours[2].sequence]
            }
        )]
    );
    let dropped = decode(&mut decoder, 2, &batch(&[removed(&[H[2]], "CPU")])).expect("decoded");
    assert_eq!(
        changes(&dropped),
        [(
            StorageTier::Host,
            KvEventData::Removed {
                blocks: vec![ours[2].sequence]
            }
        )]
    );
    // Gone from both: a third removal is of a block no tier holds.
    let third = decode(&mut decoder, 3, &batch(&[removed(&[H[2]], "CPU")])).expect("decoded");
    assert_eq!((third.events.len(), skipped(&third)), (0, [0, 0, 0, 1]));
}

#[test]
fn a_reset_of_the_gpu_cache_leaves_offloaded_blocks() {
    let mut decoder = decoder();
    let ours = ours();
    let step = batch(&[stored(&H, None, &PROMPT), offloaded(H[0], "CPU")]);
    decode(&mut decoder, 0, &step).expect("decoded");
    let cleared = list(&[string("AllBlocksCleared")]);
    let reset = decode(
        &mut decoder,
        1,
        &batch(&[map(&[("type", string("AllBlocksCleared"))])]),
    )
    .expect("decoded");
    assert_eq!(
        changes(&reset),
        [(StorageTier::Device, KvEventData::Cleared)]
    );
    // The host copy is still known (its removal resolves), the device blocks are not.
    let after = batch(&[removed(&[H[0]], "CPU"), removed(&[H[1]], "GPU")]);
    let after = decode(&mut decoder, 2, &after).expect("decoded");
    assert_eq!(
        changes(&after),
        [(
            StorageTier::Host,
            KvEventData::Removed {
                blocks: vec![ours[0].sequence]
            }
        )]
    );
    assert_eq!(after.unknown_removed, 1);
    // vLLM before its map events wrote the clear as an array: the same.
    let reset = decode(&mut decoder, 3, &batch(&[cleared])).expect("decoded");
    assert_eq!(
        changes(&reset),
        [(StorageTier::Device, KvEventData::Cleared)]
    );
}

#[test]
fn an_offloaded_block_whose_parent_left_every_tier_is_skipped() {
    let mut decoder = decoder();
    decode(&mut decoder, 0, &batch(&[stored(&H, None, &PROMPT)])).expect("decoded");
    let step = batch(&[
        removed(&[H[0]], "GPU"),
        offloaded(H[1], "CPU"),
        offloaded(H[2], "CPU"),
    ]);
    let decoded = decode(&mut decoder, 1, &step).expect("decoded");
    assert_eq!(
        skipped(&decoded),
        [0, 1, 0, 0],
        "H[1] follows the evicted H[0]"
    );
    let tiers: Vec<StorageTier> = decoded.events.iter().map(|event| event.tier).collect();
    assert_eq!(
        tiers,
        [StorageTier::Device, StorageTier::Host],
        "H[2] is offloaded"
    );
}

#[test]
fn the_older_array_store_with_the_chunk_size_is_taken_too() {
    let mut decoder = decoder();
    decode(&mut decoder, 0, &batch(&[stored(&H, None, &PROMPT)])).expect("decoded");
    // ["BlockStored", [hash], nil, [], 16, nil, "CPU", nil]: a chunk of four blocks of 4.
    let older = list(&[
        string("BlockStored"),
        hashes(&[H[2]]),
        vec![NIL],
        tokens(&[]),
        small(16),
        vec![NIL],
        string("CPU"),
        vec![NIL],
    ]);
    let decoded = decode(&mut decoder, 1, &batch(&[older])).expect("not another block size");
    assert_eq!(decoded.events[0].tier, StorageTier::Host);
}

#[test]
fn a_store_after_an_unknown_parent_is_skipped_not_the_message() {
    let mut decoder = decoder();
    let ours = ours();
    // The prompt's last block, after a parent stored before the decoder subscribed, and its
    // first block in the same step: the first is skipped, the second applied.
    let step = batch(&[
        stored(&H[2..], Some(H[1]), &PROMPT[8..]),
        stored(&H[..1], None, &PROMPT[..4]),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded, not refused");
    assert_eq!(skipped(&decoded), [0, 1, 0, 0]);
    assert_eq!(
        changes(&decoded),
        [(
            StorageTier::Device,
            KvEventData::Stored {
                parent: None,
                block_size: block_size(),
                blocks: ours[..1].to_vec(),
            }
        )]
    );
}

#[test]
fn a_store_whose_tokens_do_not_fill_its_blocks_is_skipped_with_its_children() {
    let mut decoder = decoder();
    // vLLM's groups that skip null blocks list the blocks they keep while `token_ids` spans
    // them all (vLLM issue #44451): two hashes, three blocks of tokens. Its child cannot be
    // hashed either; the first block, stored apart, is applied.
    let step = batch(&[
        stored(&H[..1], None, &PROMPT[..4]),
        stored(&[0x3001, 0x3002], None, &PROMPT),
        stored(&[0x3003], Some(0x3002), &PROMPT[..4]),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded, not refused");
    assert_eq!(skipped(&decoded), [0, 1, 2, 0]);
    assert_eq!(decoded.events.len(), 1);
}

#[test]
fn blocks_of_an_unknown_medium_are_skipped_not_put_on_the_device() {
    let mut decoder = decoder();
    let ours = ours();
    // A medium the decoder does not know: a store with token ids, an offloaded copy of a known
    // block and a removal, each skipped for it; the rest of the step applies.
    let unknown_store = map(&[
        ("type", string("BlockStored")),
        ("block_hashes", hashes(&[0x4001])),
        ("parent_block_hash", vec![NIL]),
        ("token_ids", tokens(&[21, 22, 23, 24])),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("NVME_POOL")),
        ("lora_name", vec![NIL]),
        ("group_idx", small(0)),
    ]);
    let step = batch(&[
        stored(&H, None, &PROMPT),
        unknown_store,
        offloaded(H[1], "NVME_POOL"),
        removed(&[H[2]], "NVME_POOL"),
    ]);
    let decoded = decode(&mut decoder, 0, &step).expect("decoded, not refused");
    assert_eq!(
        decoded.unknown_medium, 3,
        "one block in each of three events"
    );
    assert_eq!(skipped(&decoded), [0; 4]);
    assert_eq!(
        changes(&decoded),
        [(
            StorageTier::Device,
            KvEventData::Stored {
                parent: None,
                block_size: block_size(),
                blocks: ours.clone(),
            }
        )]
    );
    // The device copy of H[2] is still known, and the unknown medium's block never was.
    let after = batch(&[removed(&[H[2]], "GPU"), removed(&[0x4001], "GPU")]);
    let after = decode(&mut decoder, 1, &after).expect("decoded");
    assert_eq!(
        changes(&after),
        [(
            StorageTier::Device,
            KvEventData::Removed {
                blocks: vec![ours[2].sequence]
            }
        )]
    );
    assert_eq!(after.unknown_removed, 1);
}
