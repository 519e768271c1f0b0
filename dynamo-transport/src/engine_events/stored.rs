//! A `BlockStored` event, hashed into our blocks; or, without token ids, named through the
//! blocks the decoder already knows.

use dynamo_core::{HashedBlock, KvEventData, SequenceHash, StorageTier};
use rmpv::Value;

use super::fields::{self, Event, LoraName, engine_hash, engine_hashes, tier};
use super::known::Known;
use super::{Changes, EngineEventDecoder, malformed};
use crate::Error;

impl EngineEventDecoder {
    /// A `BlockStored` event (see the [module docs](super) for its fields): its changes added
    /// to `out`, or its blocks counted there as skipped.
    pub(super) fn stored(
        &self,
        event: Event<'_>,
        known: &mut Known,
        out: &mut Changes,
    ) -> Result<(), Error> {
        use fields::stored::{BLOCK_HASHES, BLOCK_SIZE, MEDIUM, PARENT, TOKEN_IDS};

        let hashes = engine_hashes(event.field("block_hashes", BLOCK_HASHES))?;
        let parent_engine = match event.field("parent_block_hash", PARENT) {
            None | Some(Value::Nil) => None,
            Some(value) => Some(engine_hash(value)?),
        };
        let tokens = event
            .field("token_ids", TOKEN_IDS)
            .ok_or_else(|| malformed("token_ids is not an array"))
            .and_then(|value| fields::token_ids(value).map_err(malformed))?;
        let medium = event.field("medium", MEDIUM);
        let Some(tier) = tier(medium) else {
            out.skip_medium(hashes.len(), medium);
            return Ok(());
        };
        if event.hashes_lookahead() {
            // Indexed on the blocks' own tokens: the router may count one block more at the
            // end of a match than the server reuses (see the module docs).
            out.lookahead += hashes.len();
        }
        if tokens.is_empty() && !hashes.is_empty() {
            // vLLM's offloading connector names an offloaded block by its hash alone, with
            // `block_size` 0 (or the size of its chunk): the tier is news, the block is not.
            self.tokenless(&hashes, tier, known, out);
            return Ok(());
        }
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
        let parent = match parent_engine.map(|engine| known.block(engine)) {
            None => None,
            Some(Some(parent)) => Some(parent),
            Some(None) => {
                out.unknown_parent += hashes.len();
                return Ok(());
            }
        };
        if tokens.len() != hashes.len() * ours.as_usize() {
            out.misaligned += hashes.len();
            return Ok(());
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
        let salt = (salted != self.hasher).then_some(salted);
        let mut chain = parent;
        let mut engine_parent = parent_engine;
        let mut stored = Vec::with_capacity(hashes.len());
        for (&engine, block) in hashes.iter().zip(tokens.chunks_exact(ours.as_usize())) {
            let local = hasher.local_hash(block);
            let block = HashedBlock {
                local,
                sequence: SequenceHash::chain(chain, local),
            };
            known.insert(engine, block, engine_parent, salt, tier);
            stored.push(block);
            chain = Some(block.sequence);
            engine_parent = Some(engine);
        }
        out.changes.push((
            tier,
            KvEventData::Stored {
                parent,
                block_size: ours,
                blocks: stored,
            },
        ));
        Ok(())
    }

    /// A `BlockStored` event without token ids: each block the decoder knows, in any tier,
    /// is stored in `tier` too (as chains of the blocks that follow one another); one it does
    /// not know, or whose parent it no longer knows, is skipped and counted.
    fn tokenless(&self, hashes: &[u64], tier: StorageTier, known: &mut Known, out: &mut Changes) {
        let mut run: Option<(Option<SequenceHash>, Vec<HashedBlock>)> = None;
        for &engine in hashes {
            let Some(entry) = known.entry(engine) else {
                out.tokenless += 1;
                flush(&mut run, tier, self, out);
                continue;
            };
            let parent = match entry.parent.map(|parent| known.block(parent)) {
                None => None,
                Some(Some(parent)) => Some(parent),
                Some(None) => {
                    out.unknown_parent += 1;
                    flush(&mut run, tier, self, out);
                    continue;
                }
            };
            if entry.held_in(tier) {
                // Already there: nothing changes.
                flush(&mut run, tier, self, out);
                continue;
            }
            known.add_tier(engine, tier);
            match &mut run {
                Some((_, blocks)) if blocks.last().map(|last| last.sequence) == parent => {
                    blocks.push(entry.block);
                }
                _ => {
                    flush(&mut run, tier, self, out);
                    run = Some((parent, vec![entry.block]));
                }
            }
        }
        flush(&mut run, tier, self, out);
    }
}

/// The chain gathered so far, stored in `tier`.
fn flush(
    run: &mut Option<(Option<SequenceHash>, Vec<HashedBlock>)>,
    tier: StorageTier,
    decoder: &EngineEventDecoder,
    out: &mut Changes,
) {
    if let Some((parent, blocks)) = run.take() {
        out.changes.push((
            tier,
            KvEventData::Stored {
                parent,
                block_size: decoder.hasher.block_size(),
                blocks,
            },
        ));
    }
}
