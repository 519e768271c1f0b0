//! Which of a vLLM hybrid model's KV cache groups the decoder follows (see
//! [`EngineEventDecoder::decode`]).

use rmpv::Value;

use super::EngineEventDecoder;
use super::fields::{self, Event};
use crate::Error;

impl EngineEventDecoder {
    /// The KV cache group to follow (see [`decode`](Self::decode)): the one followed, or else
    /// the first in `events` that can be; `None` while no event names one that can.
    pub(super) fn choose_group(&self, events: &[Value]) -> Result<Option<i64>, Error> {
        use fields::stored::{BLOCK_SIZE, GROUP_IDX};

        if self.followed.is_some() {
            return Ok(self.followed);
        }
        let ours = self.hasher.block_size().get();
        let mut mismatch = None;
        for event in events.iter().filter_map(Event::new) {
            if event.kind() != Some("BlockStored") {
                continue;
            }
            let (Some(group), Some(size)) = (
                event.group(GROUP_IDX),
                event
                    .field("block_size", BLOCK_SIZE)
                    .and_then(Value::as_u64),
            ) else {
                continue;
            };
            match event.group_kind() {
                None | Some("unknown") if size == u64::from(ours) => return Ok(Some(group)),
                Some(kind) if FULL_PREFIX_KINDS.contains(&kind) => {
                    if size == u64::from(ours) {
                        return Ok(Some(group));
                    }
                    mismatch = mismatch.or(Some(size));
                }
                _ => {}
            }
        }
        match mismatch {
            Some(engine) => Err(Error::BlockSizeMismatch { engine, ours }),
            None => Ok(None),
        }
    }
}

/// The kinds of vLLM's KV cache groups whose blocks hold a sequence's whole prefix
/// (`vllm/v1/kv_cache_interface.py`, `KVCacheSpecKind`).
const FULL_PREFIX_KINDS: [&str; 3] = ["full_attention", "mla_attention", "sink_full_attention"];
