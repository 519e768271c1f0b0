//! SGLang's KV events under EAGLE speculative decoding, whose radix cache keys each position by
//! the pair of its token and the next one: the decoder hashes a page's own tokens, the pairs'
//! first elements, so its blocks meet the router's hashes of the prompt.
//!
//! With EAGLE (`is_eagle`), SGLang's radix cache turns a request's tokens `t_0 … t_n` into the
//! bigrams `(t_0, t_1) … (t_n-1, t_n)` (0.5.6: `mem_cache/utils.py`, `convert_to_bigram_key`;
//! 0.5.23: `RadixKey(is_bigram=True)` in `mem_cache/radix_cache.py`), keeps position `i`'s KV
//! slot as bigram `i`'s value (`kv_indices[:len(keys)]`), cuts keys to whole pages of bigrams,
//! and writes one `BlockStored` per page with the page's pairs as `token_ids` and their count
//! as `block_size` (0.5.6: `RadixCache._record_store_event`; 0.5.23: `mem_cache/events.py`,
//! `record_store`, "bigram pages expose tuples"). msgspec writes each pair as a two-element
//! array.
//!
//! The fixtures are each version's layout (`disaggregation/kv_events.py` in the 0.5.6 and
//! 0.5.23 wheels): 0.5.6 arrays `["BlockStored", block_hashes, parent_block_hash, token_ids,
//! block_size, lora_id]`, 0.5.23 maps `{"type", "block_hashes", "parent_block_hash",
//! "token_ids", "block_size", "lora_id", "medium"}` (defaults left out), both in the batch
//! `[ts, events, attn_dp_rank]`. Each is byte for byte what msgspec 0.23 writes for
//! the same events built with the wheel's own classes and the pairs as tuples.

use dynamo_core::{BlockHasher, BlockSize, KvEventData, WorkerId};
use dynamo_transport::Error;
use dynamo_transport::engine_events::{Decoded, EngineEventDecoder};

mod msgpack;

use msgpack::{NIL, float, list, map, small, string};

/// SGLang's page size and the router's block size.
fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// The prompt: nine tokens, so eight bigrams, two pages of four.
const PROMPT: [u8; 9] = [11, 12, 13, 14, 15, 16, 17, 18, 19];
/// SGLang's hashes of the two pages.
const PAGE_HASHES: [u8; 2] = [101, 102];

/// The bigrams of page `page`: `(t_i, t_i+1)` for its four positions, as msgspec writes them.
fn pairs(page: usize) -> Vec<u8> {
    let start = page * 4;
    let pairs: Vec<Vec<u8>> = (start..start + 4)
        .map(|i| list(&[small(PROMPT[i]), small(PROMPT[i + 1])]))
        .collect();
    list(&pairs)
}

fn parent(page: usize) -> Vec<u8> {
    match page {
        0 => vec![NIL],
        _ => small(PAGE_HASHES[page - 1]),
    }
}

/// SGLang 0.5.6: `[ts, [["BlockStored", [hash], parent, pairs, 4, nil] …], 0]`.
fn sglang_0_5_6(pages: &[usize]) -> Vec<u8> {
    let events: Vec<Vec<u8>> = pages
        .iter()
        .map(|&page| {
            list(&[
                string("BlockStored"),
                list(&[small(PAGE_HASHES[page])]),
                parent(page),
                pairs(page),
                small(4),
                vec![NIL],
            ])
        })
        .collect();
    list(&[float(1_700_000_000.5), list(&events), small(0)])
}

/// SGLang 0.5.23: `[ts, [{"type": "BlockStored", …} …], 0]`.
fn sglang_0_5_23(pages: &[usize]) -> Vec<u8> {
    let events: Vec<Vec<u8>> = pages
        .iter()
        .map(|&page| {
            map(&[
                ("type", string("BlockStored")),
                ("block_hashes", list(&[small(PAGE_HASHES[page])])),
                ("parent_block_hash", parent(page)),
                ("token_ids", pairs(page)),
                ("block_size", small(4)),
                ("lora_id", vec![NIL]),
                ("medium", string("GPU")),
            ])
        })
        .collect();
    list(&[float(1_700_000_000.5), list(&events), small(0)])
}

fn decode(
    decoder: &mut EngineEventDecoder,
    sequence: i64,
    payload: &[u8],
) -> Result<Decoded, Error> {
    decoder.decode(&[b"kv-events", &sequence.to_be_bytes(), payload])
}

/// The router's blocks of the prompt: its first two whole blocks, `t_0 … t_7`.
fn router_blocks() -> Vec<dynamo_core::HashedBlock> {
    let prompt: Vec<u32> = PROMPT.iter().copied().map(u32::from).collect();
    let mut blocks = BlockHasher::new(block_size()).hash_blocks(&prompt);
    blocks.truncate(2);
    blocks
}

fn stored_blocks(decoded: &Decoded) -> Vec<dynamo_core::HashedBlock> {
    decoded
        .events
        .iter()
        .flat_map(|event| match &event.data {
            KvEventData::Stored { blocks, .. } => blocks.clone(),
            other => panic!("not stored: {other:?}"),
        })
        .collect()
}

#[test]
fn bigram_pages_hash_as_the_router_hashes_the_prompt() {
    for (version, payload) in [
        ("0.5.6", sglang_0_5_6(&[0, 1])),
        ("0.5.23", sglang_0_5_23(&[0, 1])),
    ] {
        let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
        let decoded = decode(&mut decoder, 0, &payload).expect(version);
        assert_eq!(stored_blocks(&decoded), router_blocks(), "{version}");
        let KvEventData::Stored { parent, .. } = &decoded.events[1].data else {
            panic!("{version}: stored");
        };
        assert_eq!(*parent, Some(router_blocks()[0].sequence), "{version}");
    }
}

#[test]
fn bigram_pages_stored_apart_chain_and_are_removed_by_their_hash() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    let first = decode(&mut decoder, 0, &sglang_0_5_23(&[0])).expect("first page");
    let second = decode(&mut decoder, 1, &sglang_0_5_23(&[1])).expect("second page");
    assert_eq!(
        [stored_blocks(&first), stored_blocks(&second)].concat(),
        router_blocks()
    );
    let removed = map(&[
        ("type", string("BlockRemoved")),
        ("block_hashes", list(&[small(PAGE_HASHES[1])])),
        ("medium", string("GPU")),
    ]);
    let removed = list(&[float(1_700_000_000.5), list(&[removed]), small(0)]);
    let decoded = decode(&mut decoder, 2, &removed).expect("removed");
    assert_eq!(
        decoded.events[0].data,
        KvEventData::Removed {
            blocks: vec![router_blocks()[1].sequence]
        }
    );
}

#[test]
fn pairs_that_do_not_chain_are_refused_with_their_message() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    // (11, 12) then (99, 14): the second pair does not start where the first ends.
    let broken = list(&[
        string("BlockStored"),
        list(&[small(PAGE_HASHES[1])]),
        vec![NIL],
        list(&[
            list(&[small(11), small(12)]),
            list(&[small(99), small(14)]),
            list(&[small(14), small(15)]),
            list(&[small(15), small(16)]),
        ]),
        small(4),
        vec![NIL],
    ]);
    let good = list(&[
        string("BlockStored"),
        list(&[small(PAGE_HASHES[0])]),
        vec![NIL],
        pairs(0),
        small(4),
        vec![NIL],
    ]);
    let message = list(&[float(1_700_000_000.5), list(&[good, broken])]);
    let error = decode(&mut decoder, 0, &message).expect_err("pairs that do not chain");
    assert!(
        matches!(error, Error::MalformedEngineEvent { .. }),
        "{error}"
    );
    // A triple is no pair.
    let triple = list(&[
        string("BlockStored"),
        list(&[small(PAGE_HASHES[0])]),
        vec![NIL],
        list(&vec![list(&[small(11), small(12), small(13)]); 4]),
        small(4),
        vec![NIL],
    ]);
    let message = list(&[float(1_700_000_000.5), list(&[triple])]);
    let error = decode(&mut decoder, 1, &message).expect_err("not a pair");
    assert!(
        matches!(error, Error::MalformedEngineEvent { .. }),
        "{error}"
    );
    // Nothing of either was kept: the good page's hash is unknown.
    let removed = list(&[string("BlockRemoved"), list(&[small(PAGE_HASHES[0])])]);
    let removed = list(&[float(1_700_000_000.5), list(&[removed])]);
    let decoded = decode(&mut decoder, 2, &removed).expect("removed");
    assert_eq!((decoded.events.len(), decoded.unknown_removed), (0, 1));
}
