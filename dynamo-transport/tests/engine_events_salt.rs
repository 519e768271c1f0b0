//! Salted and LoRA blocks in vLLM's and SGLang's KV events, in each layout they have published:
//! the decoder hashes a stored block with its salt and adapter exactly as the router hashes a
//! request with them (`GenerateRequest::block_hasher`).
//!
//! The fixtures are written byte by byte in each engine's field order, from its source, and were
//! checked by decoding them with msgspec 0.23 into the engines' own event classes (SGLang's
//! taken from its 0.5.18 and 0.5.23 wheels, vLLM's written from its source) and comparing them
//! with what msgspec writes for the same events:
//!
//! - vLLM, arrays (`vllm/distributed/kv_events.py` with `array_like`, `omit_defaults`):
//!   `["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//!   lora_name, extra_keys]`, `extra_keys` one entry per block, the salt among the first block's
//!   only (`vllm/v1/core/kv_cache_utils.py`, `generate_block_hash_extra_keys`: LoRA name,
//!   multimodal keys, salt when the block starts at token 0, prompt-embedding hash);
//! - vLLM, maps (the same file after `array_like` was dropped, source of June 2026 on): the
//!   batch `{"ts", "events", "data_parallel_rank"}` and each event `{"type": "BlockStored", …}`
//!   with the same names, defaults left out;
//! - SGLang 0.5.18 (`sglang/srt/disaggregation/kv_events.py` in its wheel; 0.5.19 the
//!   same): arrays, medium always written, and a salted block as `BlockStoredWithMetadata`,
//!   `{"cache_salt": salt}` after `medium`;
//! - SGLang 0.5.23 (its wheel's same file): maps, `cache_salt` (from 0.5.20) and `lora_name` (from
//!   0.5.22) by name.

use dynamo_core::{
    BlockHasher, BlockSize, GenerateRequest, HashedBlock, KvEvent, KvEventData, SequenceHash,
    StorageTier, WorkerId,
};
use dynamo_transport::engine_events::EngineEventDecoder;

mod msgpack;

use msgpack::{NIL, batch, binary, float, int, list, map, small, string, tokens, uint};

const FIRST: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const NEXT: [u8; 4] = [9, 10, 11, 12];

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// The router's hasher for a request with this adapter and salt.
fn router_hasher(lora: Option<&str>, salt: Option<&str>) -> BlockHasher {
    let mut request = GenerateRequest::new("r", "m", vec![1]);
    request.lora_name = lora.map(str::to_owned);
    request.cache_salt = salt.map(str::to_owned);
    request.block_hasher(block_size())
}

/// vLLM's newer batch, a map.
fn map_batch(events: &[Vec<u8>]) -> Vec<u8> {
    map(&[
        ("ts", float(1_700_000_000.5)),
        ("events", list(events)),
        ("data_parallel_rank", small(0)),
    ])
}

/// Decode `payloads` in order; each message's events.
fn decode_all(payloads: &[Vec<u8>]) -> Vec<Vec<KvEvent>> {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    payloads
        .iter()
        .enumerate()
        .map(|(sequence, payload)| {
            let sequence = (sequence as i64).to_be_bytes();
            decoder
                .decode(&[b"kv-events", &sequence, payload])
                .expect("decoded")
                .events
        })
        .collect()
}

fn stored(event: &KvEvent) -> (Option<SequenceHash>, &[HashedBlock]) {
    match &event.data {
        KvEventData::Stored { parent, blocks, .. } => (*parent, blocks),
        other => panic!("not stored: {other:?}"),
    }
}

/// The blocks of `FIRST` then `NEXT` under `hasher`: the first two, then the third.
fn expected(hasher: BlockHasher) -> (Vec<HashedBlock>, HashedBlock) {
    let all: Vec<u8> = FIRST.iter().chain(&NEXT).copied().collect();
    let all: Vec<u32> = all.into_iter().map(u32::from).collect();
    let mut blocks = hasher.hash_blocks(&all);
    let third = blocks.pop().expect("three blocks");
    (blocks, third)
}

/// Decoding `first` (FIRST's two blocks) then `next` (NEXT after them) gives the hashes of
/// `hasher`, chained.
fn assert_hashed_as(first: Vec<u8>, next: Vec<u8>, hasher: BlockHasher) {
    let decoded = decode_all(&[first, next]);
    let (two, third) = expected(hasher);
    let (parent, blocks) = stored(&decoded[0][0]);
    assert_eq!((parent, blocks), (None, two.as_slice()));
    let (parent, blocks) = stored(&decoded[1][0]);
    assert_eq!(parent, Some(two[1].sequence));
    assert_eq!(blocks, [third]);
}

// --- vLLM, arrays ---

/// `["BlockStored", [hashes], parent, tokens, 4, nil, "GPU", lora_name, extra_keys]`.
fn vllm_array(
    hashes: &[u64],
    parent: Option<u64>,
    ids: &[u8],
    lora: Option<&str>,
    extra: Option<Vec<u8>>,
) -> Vec<u8> {
    let hashes: Vec<Vec<u8>> = hashes.iter().map(|&h| uint(h)).collect();
    let mut fields = vec![
        string("BlockStored"),
        list(&hashes),
        parent.map_or(vec![NIL], uint),
        tokens(ids),
        small(4),
        vec![NIL],
        string("GPU"),
        lora.map_or(vec![NIL], string),
    ];
    // msgspec writes a nil `extra_keys` too (and later versions' nil fields after it).
    fields.push(extra.unwrap_or(vec![NIL]));
    list(&fields)
}

#[test]
fn vllm_salted_blocks_hash_as_the_router_hashes_the_salted_request() {
    // The salt is among the first block's extra keys only; the third block, stored after the
    // second, has no extra keys and takes the salt of its parent.
    let first = vllm_array(
        &[11, 12],
        None,
        &FIRST,
        None,
        Some(list(&[list(&[string("tenant-a")]), vec![NIL]])),
    );
    let next = vllm_array(&[13], Some(12), &NEXT, None, None);
    assert_hashed_as(
        batch(&[first]),
        batch(&[next]),
        router_hasher(None, Some("tenant-a")),
    );
}

#[test]
fn vllm_lora_and_salt_blocks_hash_with_both() {
    // With a LoRA adapter every block's extra keys start with its name; the salt follows it
    // in the first block's.
    let first = vllm_array(
        &[11, 12],
        None,
        &FIRST,
        Some("sql-lora"),
        Some(list(&[
            list(&[string("sql-lora"), string("tenant-a")]),
            list(&[string("sql-lora")]),
        ])),
    );
    let next = vllm_array(
        &[13],
        Some(12),
        &NEXT,
        Some("sql-lora"),
        Some(list(&[list(&[string("sql-lora")])])),
    );
    assert_hashed_as(
        batch(&[first]),
        batch(&[next]),
        router_hasher(Some("sql-lora"), Some("tenant-a")),
    );
}

#[test]
fn vllm_lora_without_salt_and_unsalted_blocks_are_unchanged() {
    let first = vllm_array(
        &[11, 12],
        None,
        &FIRST,
        Some("sql-lora"),
        Some(list(&[
            list(&[string("sql-lora")]),
            list(&[string("sql-lora")]),
        ])),
    );
    let next = vllm_array(&[13], Some(12), &NEXT, Some("sql-lora"), None);
    assert_hashed_as(
        batch(&[first]),
        batch(&[next]),
        router_hasher(Some("sql-lora"), None),
    );
    let first = vllm_array(&[11, 12], None, &FIRST, None, None);
    let next = vllm_array(&[13], Some(12), &NEXT, None, None);
    assert_hashed_as(batch(&[first]), batch(&[next]), router_hasher(None, None));
}

#[test]
fn vllm_multimodal_keys_are_not_a_salt() {
    // A multimodal key is an [identifier, offset] pair; prompt embeddings a bytes hash.
    let first = vllm_array(
        &[11, 12],
        None,
        &FIRST,
        None,
        Some(list(&[
            list(&[list(&[string("img-hash"), small(0)]), binary(b"embeds")]),
            vec![NIL],
        ])),
    );
    let next = vllm_array(&[13], Some(12), &NEXT, None, None);
    assert_hashed_as(batch(&[first]), batch(&[next]), router_hasher(None, None));
}

// --- vLLM, maps ---

/// vLLM's map event, its fields in declaration order, `None` defaults left out.
fn vllm_map(
    hashes: &[&[u8]],
    parent: Option<&[u8]>,
    ids: &[u8],
    extra: Option<Vec<u8>>,
) -> Vec<u8> {
    let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| binary(h)).collect();
    let mut fields = vec![
        ("type", string("BlockStored")),
        ("block_hashes", list(&hashes)),
        ("parent_block_hash", parent.map_or(vec![NIL], binary)),
        ("token_ids", tokens(ids)),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
        ("lora_name", vec![NIL]),
    ];
    if let Some(extra) = extra {
        fields.push(("extra_keys", extra));
    }
    fields.push(("group_idx", small(0)));
    fields.push(("kv_cache_spec_kind", string("full_attention")));
    map(&fields)
}

#[test]
fn vllm_map_events_decode_salted_and_unsalted() {
    let first = vllm_map(
        &[b"sha-11", b"sha-12"],
        None,
        &FIRST,
        Some(list(&[list(&[string("tenant-a")]), vec![NIL]])),
    );
    let next = vllm_map(
        &[b"sha-13"],
        Some(b"sha-12"),
        &NEXT,
        Some(list(&[vec![NIL]])),
    );
    assert_hashed_as(
        map_batch(&[first]),
        map_batch(&[next]),
        router_hasher(None, Some("tenant-a")),
    );
    // Unsalted: extra_keys [None, None] (written when the request has other extra keys on
    // some block) or left out.
    let first = vllm_map(
        &[b"sha-11", b"sha-12"],
        None,
        &FIRST,
        Some(list(&[vec![NIL], vec![NIL]])),
    );
    let next = vllm_map(&[b"sha-13"], Some(b"sha-12"), &NEXT, None);
    assert_hashed_as(
        map_batch(&[first]),
        map_batch(&[next]),
        router_hasher(None, None),
    );
}

#[test]
fn map_removals_and_clears_resolve_salted_blocks() {
    let first = vllm_map(
        &[b"sha-11", b"sha-12"],
        None,
        &FIRST,
        Some(list(&[list(&[string("tenant-a")]), vec![NIL]])),
    );
    let removed = map(&[
        ("type", string("BlockRemoved")),
        ("block_hashes", list(&[binary(b"sha-12")])),
        ("medium", string("GPU")),
    ]);
    let cleared = map(&[("type", string("AllBlocksCleared"))]);
    let decoded = decode_all(&[map_batch(&[first]), map_batch(&[removed, cleared])]);
    let (two, _) = expected(router_hasher(None, Some("tenant-a")));
    assert_eq!(
        decoded[1][0].data,
        KvEventData::Removed {
            blocks: vec![two[1].sequence]
        }
    );
    assert_eq!(decoded[1][1].data, KvEventData::Cleared);
}

// --- SGLang ---

/// SGLang 0.5.18: `["BlockStored", [hash], parent, tokens, 4, nil, "GPU"]`, and
/// `{"cache_salt": salt}` after it for a salted block.
fn sglang_array(hash: i64, parent: Option<i64>, ids: &[u8], salt: Option<&str>) -> Vec<u8> {
    let mut fields = vec![
        string("BlockStored"),
        list(&[int(hash)]),
        parent.map_or(vec![NIL], int),
        tokens(ids),
        small(4),
        vec![NIL],
        string("GPU"),
    ];
    if let Some(salt) = salt {
        fields.push(map(&[("cache_salt", string(salt))]));
    }
    list(&fields)
}

/// SGLang 0.5.23: a map, `medium`, `cache_salt` and `lora_name` left out when `None`.
fn sglang_map(
    hash: i64,
    parent: Option<i64>,
    ids: &[u8],
    salt: Option<&str>,
    lora: Option<&str>,
) -> Vec<u8> {
    let mut fields = vec![
        ("type", string("BlockStored")),
        ("block_hashes", list(&[int(hash)])),
        ("parent_block_hash", parent.map_or(vec![NIL], int)),
        ("token_ids", tokens(ids)),
        ("block_size", small(4)),
        ("lora_id", vec![NIL]),
        ("medium", string("GPU")),
    ];
    if let Some(salt) = salt {
        fields.push(("cache_salt", string(salt)));
    }
    if let Some(lora) = lora {
        fields.push(("lora_name", string(lora)));
    }
    map(&fields)
}

/// SGLang sends one event per page: FIRST as two events, then NEXT.
fn sglang_pages(event: impl Fn(i64, Option<i64>, &[u8]) -> Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let first = batch(&[
        event(-11, None, &FIRST[..4]),
        event(-12, Some(-11), &FIRST[4..]),
    ]);
    (first, batch(&[event(-13, Some(-12), &NEXT)]))
}

#[test]
fn sglang_salted_pages_hash_as_the_router_hashes_the_salted_request() {
    for (salt, want) in [
        (Some("tenant-a"), router_hasher(None, Some("tenant-a"))),
        (None, router_hasher(None, None)),
    ] {
        // 0.5.18's arrays.
        let (first, next) = sglang_pages(|h, p, ids| sglang_array(h, p, ids, salt));
        let decoded = decode_all(&[first, next]);
        let (two, third) = expected(want);
        assert_eq!(stored(&decoded[0][0]).1, &two[..1]);
        assert_eq!(stored(&decoded[0][1]), (Some(two[0].sequence), &two[1..]));
        assert_eq!(
            stored(&decoded[1][0]),
            (Some(two[1].sequence), &[third][..])
        );
        // 0.5.23's maps.
        let (first, next) = sglang_pages(|h, p, ids| sglang_map(h, p, ids, salt, None));
        let decoded = decode_all(&[first, next]);
        assert_eq!(stored(&decoded[0][0]).1, &two[..1]);
        assert_eq!(
            stored(&decoded[1][0]),
            (Some(two[1].sequence), &[third][..])
        );
    }
}

#[test]
fn sglang_lora_name_and_salt_hash_with_both() {
    let (first, next) =
        sglang_pages(|h, p, ids| sglang_map(h, p, ids, Some("tenant-a"), Some("sql-lora")));
    let decoded = decode_all(&[first, next]);
    let (two, third) = expected(router_hasher(Some("sql-lora"), Some("tenant-a")));
    assert_eq!(stored(&decoded[0][0]).1, &two[..1]);
    assert_eq!(
        stored(&decoded[1][0]),
        (Some(two[1].sequence), &[third][..])
    );
    assert_eq!(decoded[1][0].tier, StorageTier::Device);
}

#[test]
fn the_same_tokens_under_two_salts_are_two_sets_of_blocks() {
    let decoded = decode_all(&[batch(&[
        sglang_array(-11, None, &FIRST[..4], Some("tenant-a")),
        sglang_array(-21, None, &FIRST[..4], Some("tenant-b")),
        sglang_array(-31, None, &FIRST[..4], None),
    ])]);
    let hashes: Vec<SequenceHash> = decoded[0]
        .iter()
        .map(|event| stored(event).1[0].sequence)
        .collect();
    assert_ne!(hashes[0], hashes[1]);
    assert_ne!(hashes[0], hashes[2]);
    assert_ne!(hashes[1], hashes[2]);
}
