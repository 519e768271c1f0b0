//! The mocker's KV events carried in vLLM's ZMQ layout and read back by `dynamo-transport`'s
//! decoder, as `--engine-at vllm=…,events=…` reads a live engine's (without the socket).

use dynamo_core::{BlockSize, KvEvent, KvEventData, SequenceHash, WorkerId};
use dynamo_transport::engine_events::EngineEventDecoder;
use rmpv::Value;

/// Every worker's events through vLLM's layout: one decoder per worker, and each worker's
/// last message number.
pub(crate) struct VllmWire {
    decoders: Vec<EngineEventDecoder>,
    sequences: Vec<i64>,
}

impl VllmWire {
    /// The wire of `workers` engines whose blocks are `block_size` tokens.
    pub(crate) fn new(workers: usize, block_size: BlockSize) -> Self {
        VllmWire {
            decoders: (0..workers)
                .map(|w| EngineEventDecoder::new(WorkerId::new(w as u64), block_size))
                .collect(),
            sequences: vec![0; workers],
        }
    }

    /// One step's events of `worker`, sent as one message and decoded: the events the index
    /// gets. `tokens` gives the token ids of a stored block (an engine's events carry them;
    /// the mocker's carry only hashes).
    ///
    /// # Panics
    ///
    /// If the decoder refuses the message or sees a gap: the wire loses nothing.
    pub(crate) fn carry(
        &mut self,
        worker: usize,
        events: &[KvEventData],
        tokens: impl FnMut(&SequenceHash) -> Vec<u32>,
    ) -> Vec<KvEvent> {
        if events.is_empty() {
            return Vec::new();
        }
        self.sequences[worker] += 1;
        let payload = vllm_batch(events, tokens);
        let sequence = self.sequences[worker].to_be_bytes();
        let frames: [&[u8]; 3] = [b"kv-events", &sequence, &payload];
        let decoded = self.decoders[worker]
            .decode(&frames)
            .expect("vLLM's layout decodes");
        assert_eq!(decoded.gap, None);
        assert_eq!(decoded.unknown_removed, 0, "every removed block was stored");
        decoded.events
    }
}

/// `[timestamp, [event, …], data_parallel_rank]`, each event as vLLM's publisher writes it
/// (`vllm/distributed/kv_events.py`): `["BlockStored", hashes, parent, token_ids, block_size,
/// lora_id, medium]`, `["BlockRemoved", hashes, medium]`, `["AllBlocksCleared"]`. The engine's
/// block hashes are the mocker's sequence hashes, which the decoder treats as opaque.
fn vllm_batch(
    events: &[KvEventData],
    mut tokens: impl FnMut(&SequenceHash) -> Vec<u32>,
) -> Vec<u8> {
    let hash = |h: &SequenceHash| Value::from(h.0);
    let encoded: Vec<Value> = events
        .iter()
        .map(|data| match data {
            KvEventData::Stored {
                parent,
                block_size,
                blocks,
            } => {
                let ids: Vec<Value> = blocks
                    .iter()
                    .flat_map(|block| tokens(&block.sequence))
                    .map(Value::from)
                    .collect();
                Value::Array(vec![
                    "BlockStored".into(),
                    Value::Array(blocks.iter().map(|b| hash(&b.sequence)).collect()),
                    parent.as_ref().map_or(Value::Nil, hash),
                    Value::Array(ids),
                    Value::from(block_size.get()),
                    Value::Nil,
                    "GPU".into(),
                ])
            }
            KvEventData::Removed { blocks } => Value::Array(vec![
                "BlockRemoved".into(),
                Value::Array(blocks.iter().map(hash).collect()),
                "GPU".into(),
            ]),
            KvEventData::Cleared => Value::Array(vec!["AllBlocksCleared".into()]),
            other => panic!("the mocker does not publish {other:?}"),
        })
        .collect();
    let batch = Value::Array(vec![
        Value::from(0.0),
        Value::Array(encoded),
        Value::from(0),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &batch).expect("msgpack");
    bytes
}
