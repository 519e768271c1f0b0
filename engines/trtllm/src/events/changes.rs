//! The router's changes for TensorRT-LLM's `stored`, `removed` and `updated` events: blocks
//! hashed our way and chained, removed with their descendants, moved between tiers.

use std::collections::HashSet;

use dynamo_core::{BlockHasher, HashedBlock, KvEvent, KvEventData, SequenceHash, Token};

use super::EventsError;
use super::decode::TrtllmEventDecoder;
use super::levels::{Held, Level};
use super::wire::{EngineHash, Removed, Stored, StoredBlock, Updated};

impl TrtllmEventDecoder {
    /// A chain of stored blocks, hashed our way from their token ids: one `Stored` per run of
    /// blocks at the same level; nothing is remembered unless the whole event is good.
    pub(super) fn stored(
        &mut self,
        stored: Stored,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) -> Result<(), EventsError> {
        let parent = match &stored.parent_hash {
            None => None,
            Some(engine) => match self.blocks.get(engine) {
                Some(parent) => Some(parent.block.sequence),
                None => {
                    self.counts.unknown_parent += 1;
                    return Ok(());
                }
            },
        };
        let block_size = self.hasher.block_size();
        let size = block_size.as_usize();
        let last = stored.blocks.len().saturating_sub(1);
        let mut chain = parent;
        let mut remembered = Vec::with_capacity(stored.blocks.len());
        for (at, block) in stored.blocks.iter().enumerate() {
            if block.tokens.len() != size {
                if block.tokens.len() < size && at == last {
                    self.counts.partial_blocks += 1;
                    break;
                }
                self.counts.block_size_mismatches += 1;
                return Err(EventsError::BlockSizeMismatch {
                    engine: block.tokens.len(),
                    ours: block_size.get(),
                });
            }
            if block
                .tokens
                .iter()
                .any(|token| token.token_extra_id.is_some_and(|extra| extra != 0))
            {
                // Its children would chain from a block the index does not hold.
                self.counts.multimodal_blocks += 1;
                break;
            }
            let Some(level) = Level::new(block.cache_level) else {
                // As for a multimodal block: the chain stops here.
                self.counts.unknown_levels += 1;
                break;
            };
            let hasher = self.hasher_for(block);
            let local = hasher.local_hash(&self.token_ids(block)?);
            let sequence = SequenceHash::chain(chain, local);
            let held = Held {
                block: HashedBlock { local, sequence },
                parent: chain,
                level,
            };
            remembered.push((block.block_hash.clone(), held));
            chain = Some(sequence);
        }
        if remembered.is_empty() {
            return Ok(());
        }
        if self.blocks.len().saturating_add(remembered.len()) > self.max_blocks {
            self.counts.over_capacity += 1;
            return Ok(());
        }
        for run in remembered.chunk_by(|(_, a), (_, b)| a.level == b.level) {
            let level = run[0].1.level;
            self.used.insert(level);
            let data = KvEventData::Stored {
                parent: run[0].1.parent,
                block_size,
                blocks: run.iter().map(|(_, held)| held.block).collect(),
            };
            out.push(Ok(self.numbered(level, data)));
        }
        // A block stored again at another level than it was known at has left that one (a
        // block is at one level at a time).
        let mut left = Vec::new();
        let mut after = stored.parent_hash;
        for (engine, held) in remembered {
            if let Some(before) = self.blocks.insert(engine.clone(), after.as_ref(), held)
                && before.level != held.level
                && before.block.sequence == held.block.sequence
            {
                left.push((before.level, held.block.sequence));
            }
            after = Some(engine);
        }
        self.removed_from(left, out);
        Ok(())
    }

    /// A LoRA adapter is known here only by its id: its decimal form names it, as in the vLLM
    /// events' decoder.
    fn hasher_for(&self, block: &StoredBlock) -> BlockHasher {
        match block.lora_id {
            Some(lora) => self.hasher.with_lora(&lora.to_string()),
            None => self.hasher,
        }
    }

    fn token_ids(&mut self, block: &StoredBlock) -> Result<Vec<Token>, EventsError> {
        block
            .tokens
            .iter()
            .map(|token| Token::try_from(token.token_id).ok())
            .collect::<Option<Vec<Token>>>()
            .ok_or_else(|| {
                self.counts.malformed += 1;
                EventsError::malformed("a token id is not a u32", None)
            })
    }

    /// Removed blocks, each with its known descendants (which the server may have dropped
    /// without naming them), each from the tier it is in.
    pub(super) fn removed(
        &mut self,
        removed: &Removed,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) {
        let named = &removed.block_hashes;
        let known: HashSet<&EngineHash> = named
            .iter()
            .filter(|engine| self.blocks.get(engine).is_some())
            .collect();
        self.counts.unknown_removed += named
            .iter()
            .filter(|engine| !known.contains(engine))
            .count() as u64;
        // A block named after one of its ancestors (or twice) went with the first.
        let mut gone = Vec::new();
        for engine in named {
            self.blocks.remove_tree(engine, &mut gone);
        }
        // Every known block named is gone, and so are the descendants not named.
        self.counts.descendants_removed += gone.len().saturating_sub(known.len()) as u64;
        self.removed_from(to_levels(gone), out);
    }

    /// One `Removed` per level of `blocks`, fastest level first.
    fn removed_from(
        &mut self,
        blocks: Vec<(Level, SequenceHash)>,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) {
        for level in Level::all() {
            let at_level: Vec<SequenceHash> = blocks
                .iter()
                .filter(|(at, _)| *at == level)
                .map(|(_, sequence)| *sequence)
                .collect();
            if !at_level.is_empty() {
                let data = KvEventData::Removed { blocks: at_level };
                out.push(Ok(self.numbered(level, data)));
            }
        }
    }

    /// A block's priority or cache level changed: a new level moves it between tiers.
    pub(super) fn updated(
        &mut self,
        updated: &Updated,
        out: &mut Vec<Result<KvEvent, EventsError>>,
    ) {
        let Some(diff) = updated
            .cache_level
            .filter(|diff| diff.old_value != diff.new_value)
        else {
            self.counts.updated += 1;
            return;
        };
        let Some(held) = self.blocks.get(&updated.block_hash) else {
            self.counts.unknown_updated += 1;
            return;
        };
        let Some(level) = Level::new(diff.new_value) else {
            // Forgotten, and its descendants with it: the router cannot reach them without
            // it, and a later removal of it would not be recognised to take them.
            self.counts.unknown_levels += 1;
            let mut gone = Vec::new();
            self.blocks.remove_tree(&updated.block_hash, &mut gone);
            self.counts.descendants_removed += gone.len().saturating_sub(1) as u64;
            self.removed_from(to_levels(gone), out);
            return;
        };
        // The level the block is known at, whatever the event says it came from.
        if level == held.level {
            self.counts.updated += 1;
            return;
        }
        self.counts.moved += 1;
        self.used.insert(level);
        // Stored first: the block stays held while it moves, for the index and its children.
        let stored = KvEventData::Stored {
            parent: held.parent,
            block_size: self.hasher.block_size(),
            blocks: vec![held.block],
        };
        out.push(Ok(self.numbered(level, stored)));
        self.removed_from(vec![(held.level, held.block.sequence)], out);
        self.blocks.set_level(&updated.block_hash, level);
    }
}

/// The level and sequence hash of each of `blocks`, for [`TrtllmEventDecoder::removed_from`].
fn to_levels(blocks: Vec<(EngineHash, Held)>) -> Vec<(Level, SequenceHash)> {
    blocks
        .into_iter()
        .map(|(_, held)| (held.level, held.block.sequence))
        .collect()
}
