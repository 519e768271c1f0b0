//! Harnesses for the decoders of `dynamo-transport`: request-plane frames, vLLM/SGLang KV
//! event batches, event-plane (NATS) messages and discovery records.
//!
//! Each takes arbitrary bytes, hands them to the entry point the network path uses, and follows
//! what parses as far as the receiving side would (a generation request is validated, a KV
//! event is applied to a router's index). Errors are fine; a panic or a hang is a bug. The
//! same functions replay the corpus in `dynamo-transport/tests/fuzz_corpus.rs`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use dynamo_core::{BlockSize, KvEvent, ResyncRequest, WorkerId};
use dynamo_router::KvIndex;
use dynamo_transport::discovery::decode_record;
use dynamo_transport::engine_events::EngineEventDecoder;
use dynamo_transport::events::{FrontendTraffic, LoadReport, decode_message};
use dynamo_transport::tcp::{Frame, read_frame};

/// Run a future over in-memory input to completion. Reading from a byte slice never waits, so
/// a future still pending after many polls is a hang.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("a decoder over in-memory bytes did not finish");
}

/// Request-plane frames: the bytes a connection carries, read frame by frame as the server and
/// the client do (a limit of 4 KiB, so that oversized frames are exercised too), until the
/// input ends or a frame cannot be skipped.
pub fn request_frame(data: &[u8]) {
    let mut reader = data;
    loop {
        match complete(read_frame(&mut reader, 4096)) {
            Ok(Some(Frame::Request { request, .. })) => {
                let _ = request.validate();
            }
            Ok(Some(Frame::Error { error, .. })) => {
                let _ = dynamo_core::Error::from(error).to_string();
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(error) if error.is_recoverable() => {}
            Err(_) => return,
        }
    }
}

/// vLLM/SGLang KV event messages, decoded in order by one decoder as the ZMQ subscriber does.
///
/// The input is a block size (one byte) then messages, each `shape (1 byte), sequence
/// (8 bytes), payload length (2 bytes, little-endian), payload`; the shape picks the frame
/// layout, mostly the right one (topic, sequence, msgpack payload).
pub fn engine_events(data: &[u8]) {
    let Some((&size, mut rest)) = data.split_first() else {
        return;
    };
    let Ok(block_size) = BlockSize::new(1 + u32::from(size % 16)) else {
        return;
    };
    let mut decoder = EngineEventDecoder::new(WorkerId::new(7), block_size);
    let mut index = KvIndex::new(block_size);
    while rest.len() >= 11 {
        let shape = rest[0];
        let sequence = &rest[1..9];
        let length = usize::from(u16::from_le_bytes([rest[9], rest[10]]));
        rest = &rest[11..];
        let payload = &rest[..length.min(rest.len())];
        rest = &rest[payload.len()..];
        let short = &sequence[..usize::from(shape % 8)];
        let frames: Vec<&[u8]> = match shape % 16 {
            0 => vec![payload],
            1 => vec![b"kv", sequence, payload, payload],
            2 => vec![b"kv", short, payload],
            _ => vec![b"kv", sequence, payload],
        };
        // What the subscriber compares before decoding.
        let received = <[u8; 8]>::try_from(sequence).map(i64::from_be_bytes).ok();
        if let (Some(received), Some(expected)) = (received, decoder.expected_sequence()) {
            let _ = received > expected;
        }
        match decoder.decode(&frames) {
            Ok(decoded) => {
                for event in &decoded.events {
                    let _ = index.apply(event);
                }
            }
            Err(_) => {
                if let Some(received) = received {
                    decoder.skip(received);
                }
            }
        }
    }
}

/// Event-plane messages as a NATS subscription decodes them: the first byte picks the topic
/// (KV event, load report, resync request, traffic report), the rest is the payload. KV events that decode
/// are applied to a router's index, twice (the second time as stale events).
pub fn nats_payload(data: &[u8]) {
    let Some((&topic, payload)) = data.split_first() else {
        return;
    };
    match topic % 4 {
        0 => {
            if let Ok(event) = decode_message::<KvEvent>("dynamo.kv_events", payload) {
                let _ = event.block_count();
                let block_size = match &event.data {
                    dynamo_core::KvEventData::Stored { block_size, .. } => Ok(*block_size),
                    _ => BlockSize::new(16),
                };
                let Ok(block_size) = block_size else {
                    return;
                };
                let mut index = KvIndex::new(block_size);
                let _ = index.apply(&event);
                let _ = index.apply(&event);
            }
        }
        1 => {
            let _ = decode_message::<LoadReport>("dynamo.load_metrics", payload);
        }
        2 => {
            let _ = decode_message::<ResyncRequest>("dynamo.kv_resync", payload);
        }
        _ => {
            if let Ok(report) = decode_message::<FrontendTraffic>("dynamo.traffic", payload) {
                let report = report.traffic;
                let mut sum = report.clone();
                sum.merge(&report);
                let _ = sum.is_empty();
            }
        }
    }
}

/// A worker's record as a registry (a directory file, an etcd value) holds it.
pub fn discovery_record(data: &[u8]) {
    if let Ok(record) = decode_record("fuzz", data) {
        let _ = serde_json::to_vec(&record);
        let _ = BlockSize::new(record.block_size);
    }
}
