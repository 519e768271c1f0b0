//! A `BlockStored` event, hashed into our blocks.

use dynamo_core::{HashedBlock, KvEventData, SequenceHash, StorageTier};
use rmpv::Value;

use super::fields::{self, Event, LoraName, engine_hash, engine_hashes, tier};
use super::known::Known;
use super::{EngineEventDecoder, malformed};
use crate::Error;

impl EngineEventDecoder {
    /// A `BlockStored` event (see the [module docs](self) for its fields).
    pub(super) fn stored(
        &self,
        event: Event<'_>,
        known: &mut Known,
    ) -> Result<(StorageTier, KvEventData), Error> {
        use fields::stored::{BLOCK_HASHES, BLOCK_SIZE, MEDIUM, PARENT, TOKEN_IDS};

        let hashes = engine_hashes(event.field("block_hashes", BLOCK_HASHES))?;
        let parent_engine = match event.field("parent_block_hash", PARENT) {
            None | Some(Value::Nil) => None,
            Some(value) => Some(engine_hash(value)?),
        };
        let parent = parent_engine
            .map(|engine| {
                known
                    .block(engine)
                    .ok_or_else(|| malformed("the parent block was never stored"))
            })
            .transpose()?;
        let tokens = event
            .field("token_ids", TOKEN_IDS)
            .ok_or_else(|| malformed("token_ids is not an array"))
            .and_then(|value| fields::token_ids(value).map_err(malformed))?;
        let block_size = event
            .field("block_size", BLOCK_SIZE)
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed("block_size is not an integer"))?;
        let ours = self.hasher.block_size();
        if block_size != u64::from(ours.get()) {
            return Err(Error::BlockSizeMismatch {
                engine: block_size,
                ours: ours.get(),
            });
        }
        if tokens.len() != hashes.len() * ours.as_usize() {
            return Err(malformed("token_ids does not fill the stored blocks"));
        }
        // The salt the event names, or else its parent's (vLLM names it on a sequence's first
        // block only); the LoRA adapter, which every event names. Salt and LoRA parts of the
        // seed add up, so their order does not matter.
        let salted = match event.cache_salt(parent.is_none()) {
            Some(salt) => self.hasher.with_salt(salt),
            None => parent_engine
                .and_then(|engine| known.salt(engine))
                .unwrap_or(self.hasher),
        };
        let hasher = match event.lora_name() {
            Some(LoraName::Name(name)) => salted.with_lora(name),
            Some(LoraName::Id(id)) => salted.with_lora(&id.to_string()),
            None => salted,
        };
        let mut chain = parent;
        let mut stored = Vec::with_capacity(hashes.len());
        for (engine, block) in hashes.iter().zip(tokens.chunks_exact(ours.as_usize())) {
            let local = hasher.local_hash(block);
            let sequence = SequenceHash::chain(chain, local);
            known.insert(*engine, sequence, (salted != self.hasher).then_some(salted));
            stored.push(HashedBlock { local, sequence });
            chain = Some(sequence);
        }
        Ok((
            tier(event.field("medium", MEDIUM)),
            KvEventData::Stored {
                parent,
                block_size: ours,
                blocks: stored,
            },
        ))
    }
}
