//! vLLM / SGLang KV event messages, written byte by byte from the documented format (ZMQ
//! frames: topic, 8-byte big-endian sequence, msgpack batch), decoded into our events.

use dynamo_core::{BlockHasher, BlockSize, KvEventData, StorageTier, WorkerId};
use dynamo_transport::Error;
use dynamo_transport::engine_events::EngineEventDecoder;

mod msgpack;

use msgpack::{NIL, array, batch, binary, concat, int, small, string, tokens, uint};

const HASH_A: u64 = 0xF000_0000_0000_0001; // above i64::MAX: sent unsigned
const HASH_B: i64 = -42; // sent signed

fn stored_first_two_blocks() -> Vec<u8> {
    // ["BlockStored", [A, B], nil, [1..8], 4, nil, "GPU"]
    concat(&[
        array(7),
        string("BlockStored"),
        concat(&[array(2), uint(HASH_A), int(HASH_B)]),
        vec![NIL],
        tokens(&[1, 2, 3, 4, 5, 6, 7, 8]),
        small(4),
        vec![NIL],
        string("GPU"),
    ])
}

fn message(sequence: i64, payload: Vec<u8>) -> [Vec<u8>; 3] {
    [
        b"kv-events".to_vec(),
        sequence.to_be_bytes().to_vec(),
        payload,
    ]
}

fn decode(
    decoder: &mut EngineEventDecoder,
    frames: &[Vec<u8>],
) -> Result<dynamo_transport::engine_events::Decoded, Error> {
    let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    decoder.decode(&frames)
}

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

#[test]
fn stored_blocks_get_our_hashes_and_continue_their_chain() {
    let worker = WorkerId::new(3);
    let mut decoder = EngineEventDecoder::new(worker, block_size());
    let hasher = BlockHasher::new(block_size());

    let first = decode(
        &mut decoder,
        &message(0, batch(&[stored_first_two_blocks()])),
    )
    .expect("decoded");
    assert_eq!(first.gap, None);
    assert_eq!(first.events.len(), 1);
    let event = &first.events[0];
    assert_eq!(
        (event.worker, event.event_id, event.tier),
        (worker, 0, StorageTier::Device)
    );
    let expected = hasher.hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        event.data,
        KvEventData::Stored {
            parent: None,
            block_size: block_size(),
            blocks: expected.clone()
        }
    );

    // A block after A, with a bytes hash, no LoRA name and no extra keys (vLLM's fields 7
    // and 8), two unknown trailing fields, on the CPU tier.
    let next = concat(&[
        array(11),
        string("BlockStored"),
        concat(&[array(1), binary(b"sglang-hash")]),
        uint(HASH_A),
        tokens(&[9, 10, 11, 12]),
        small(4),
        vec![NIL],
        string("CPU"),
        vec![NIL],
        vec![NIL],
        string("future"),
        small(1),
    ]);
    let second = decode(&mut decoder, &message(1, batch(&[next]))).expect("decoded");
    let event = &second.events[0];
    assert_eq!((event.event_id, event.tier), (1, StorageTier::Host));
    let chained = hasher.sequence_hashes(&[1, 2, 3, 4, 9, 10, 11, 12]);
    match &event.data {
        KvEventData::Stored { parent, blocks, .. } => {
            assert_eq!(*parent, Some(expected[0].sequence));
            assert_eq!(blocks[0].sequence, chained[1]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn removed_and_cleared_resolve_through_the_engine_hashes() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    decode(
        &mut decoder,
        &message(7, batch(&[stored_first_two_blocks()])),
    )
    .expect("decoded");
    let removed = concat(&[
        array(4),
        string("BlockRemoved"),
        concat(&[array(2), int(HASH_B), uint(999)]),
        vec![NIL],
        string("ignored"),
    ]);
    let cleared = concat(&[array(1), string("AllBlocksCleared")]);
    let decoded = decode(&mut decoder, &message(8, batch(&[removed, cleared]))).expect("decoded");
    let hashes = BlockHasher::new(block_size()).sequence_hashes(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        decoded.events[0].data,
        KvEventData::Removed {
            blocks: vec![hashes[1]]
        }
    );
    assert_eq!(decoded.events[1].data, KvEventData::Cleared);
    assert_eq!(decoded.unknown_removed, 1, "999 was never stored");
}

#[test]
fn a_restarted_engine_is_forgotten_and_its_sequence_starts_afresh() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    decode(
        &mut decoder,
        &message(7, batch(&[stored_first_two_blocks()])),
    )
    .expect("decoded");
    // Every tier cleared, numbered on from the events before.
    let cleared = decoder.engine_restarted();
    let read: Vec<_> = cleared
        .iter()
        .map(|event| (event.event_id, event.tier, event.data.clone()))
        .collect();
    let expected: Vec<_> = (1..)
        .zip(StorageTier::ALL)
        .map(|(id, tier)| (id, tier, KvEventData::Cleared))
        .collect();
    assert_eq!(read, expected);
    // The new engine's first message, numbered 0, is no gap; the old blocks are unknown.
    let removed = concat(&[
        array(3),
        string("BlockRemoved"),
        concat(&[array(1), uint(HASH_A)]),
        vec![NIL],
    ]);
    let decoded = decode(&mut decoder, &message(0, batch(&[removed]))).expect("decoded");
    assert_eq!(decoded.gap, None);
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.unknown_removed, 1);
}

#[test]
fn a_skipped_sequence_number_is_reported_as_a_gap() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    decode(&mut decoder, &message(0, batch(&[]))).expect("decoded");
    decode(&mut decoder, &message(1, batch(&[]))).expect("decoded");
    let after_gap = decode(&mut decoder, &message(4, batch(&[]))).expect("decoded");
    assert_eq!(after_gap.gap, Some((2, 4)));
}

#[test]
fn bad_messages_are_errors_and_change_nothing() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(1), block_size());
    let two_frames = [b"kv".to_vec(), 0i64.to_be_bytes().to_vec()];
    assert!(matches!(
        decode(&mut decoder, &two_frames),
        Err(Error::EngineEventFrames { count: 2 })
    ));
    let short_sequence = [b"kv".to_vec(), vec![0, 1], batch(&[])];
    assert!(matches!(
        decode(&mut decoder, &short_sequence),
        Err(Error::EngineEventSequence { length: 2 })
    ));
    let not_msgpack = message(0, vec![0xc1]);
    assert!(matches!(
        decode(&mut decoder, &not_msgpack),
        Err(Error::MalformedEngineEvent { .. })
    ));
    let wrong_size = concat(&[
        array(7),
        string("BlockStored"),
        concat(&[array(1), uint(5)]),
        vec![NIL],
        tokens(&[1; 16]),
        small(16),
        vec![NIL],
        vec![NIL],
    ]);
    // The good event before the bad one is not applied either.
    let mixed = batch(&[stored_first_two_blocks(), wrong_size]);
    let error = decode(&mut decoder, &message(0, mixed)).expect_err("another block size");
    assert!(
        matches!(
            error,
            Error::BlockSizeMismatch {
                engine: 16,
                ours: 4
            }
        ),
        "{error}"
    );
    assert!(error.is_recoverable(), "the decoder is unchanged");
    let removed = concat(&[
        array(2),
        string("BlockRemoved"),
        concat(&[array(1), uint(HASH_A)]),
    ]);
    let decoded = decode(&mut decoder, &message(1, batch(&[removed]))).expect("decoded");
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.unknown_removed, 1, "A was never applied");
}

#[test]
fn decoded_events_carry_the_blocks_a_router_hashes() {
    let mut decoder = EngineEventDecoder::new(WorkerId::new(5), block_size());
    let decoded = decode(
        &mut decoder,
        &message(0, batch(&[stored_first_two_blocks()])),
    )
    .expect("decoded");
    let [event] = decoded.events.as_slice() else {
        panic!("one event: {:?}", decoded.events);
    };
    assert_eq!(event.worker, WorkerId::new(5));
    let KvEventData::Stored { parent, blocks, .. } = &event.data else {
        panic!("a stored event: {event:?}");
    };
    assert_eq!(*parent, None);
    // Recomputed from the engine's token ids, so they meet the router's own hashes.
    let hashes = BlockHasher::new(block_size()).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(blocks, &hashes);
}
