//! What the decoder knows of an engine's blocks, changed in place while a message decodes, with
//! an undo journal so that a message with a bad event leaves no trace.
//!
//! Each block is known with the tiers the engine holds it in, as the decoder told the router:
//! a removal from one tier (vLLM's offloaded copy in host memory outliving the one on the GPU)
//! leaves the others, and the block is forgotten once no tier holds it.
//!
//! The journal costs one entry per change the message makes, where a copy of the maps would
//! cost every block the engine holds, on every message (a clear copies them once).

use std::collections::HashMap;
use std::mem;

use dynamo_core::{BlockHasher, HashedBlock, SequenceHash, StorageTier};

/// One engine block as the decoder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// Our hashes of the block.
    pub(super) block: HashedBlock,
    /// The engine hash of the block it follows (`None`: the first of a sequence).
    pub(super) parent: Option<u64>,
    /// The tiers that hold it, a bit per [`StorageTier`].
    tiers: u8,
}

impl Entry {
    /// Whether `tier` holds the block.
    pub(super) fn held_in(&self, tier: StorageTier) -> bool {
        self.tiers & bit(tier) != 0
    }
}

fn bit(tier: StorageTier) -> u8 {
    1 << tier as u8
}

/// Engine block hash → what is known of the block, and → the salted hasher of the salted
/// blocks among them; taken from the decoder for one message, and given back kept or rolled
/// back.
pub(super) struct Known {
    blocks: HashMap<u64, Entry>,
    salted: HashMap<u64, BlockHasher>,
    undo: Vec<Undo>,
}

/// How to take back one change.
enum Undo {
    /// The block's previous entry (`None`: it had none).
    Block(u64, Option<Entry>),
    /// The block's previous salted hasher (`None`: it had none).
    Salted(u64, Option<BlockHasher>),
    /// The maps as they were before a clear.
    Cleared(HashMap<u64, Entry>, HashMap<u64, BlockHasher>),
}

/// The maps a [`Known`] is made of and gives back.
pub(super) type Maps = (HashMap<u64, Entry>, HashMap<u64, BlockHasher>);

impl Known {
    pub(super) fn new((blocks, salted): Maps) -> Self {
        Known {
            blocks,
            salted,
            undo: Vec::new(),
        }
    }

    /// Our sequence hash of an engine block held in any tier.
    pub(super) fn block(&self, engine: u64) -> Option<SequenceHash> {
        self.blocks.get(&engine).map(|entry| entry.block.sequence)
    }

    /// What is known of an engine block held in any tier.
    pub(super) fn entry(&self, engine: u64) -> Option<Entry> {
        self.blocks.get(&engine).copied()
    }

    /// The salted hasher of an engine block, if it is salted.
    pub(super) fn salt(&self, engine: u64) -> Option<BlockHasher> {
        self.salted.get(&engine).copied()
    }

    /// Record an engine block, following `parent`, as our `block` held in `tier`, hashed with
    /// `salted` (`None`: unsalted). A block already known as the same sequence keeps its other
    /// tiers; one known as another is replaced.
    pub(super) fn insert(
        &mut self,
        engine: u64,
        block: HashedBlock,
        parent: Option<u64>,
        salted: Option<BlockHasher>,
        tier: StorageTier,
    ) {
        let tiers = match self.blocks.get(&engine) {
            Some(entry) if entry.block.sequence == block.sequence => entry.tiers | bit(tier),
            _ => bit(tier),
        };
        self.set(
            engine,
            Some(Entry {
                block,
                parent,
                tiers,
            }),
        );
        let before = match salted {
            Some(hasher) => self.salted.insert(engine, hasher),
            None => self.salted.remove(&engine),
        };
        if before.is_some() || salted.is_some() {
            self.undo.push(Undo::Salted(engine, before));
        }
    }

    /// Add `tier` to the tiers of a known engine block; what was known of it before, `None`
    /// (and no change) when it is not known.
    pub(super) fn add_tier(&mut self, engine: u64, tier: StorageTier) -> Option<Entry> {
        let before = self.entry(engine)?;
        if !before.held_in(tier) {
            self.set(
                engine,
                Some(Entry {
                    tiers: before.tiers | bit(tier),
                    ..before
                }),
            );
        }
        Some(before)
    }

    /// Take `tier` from an engine block's tiers, forgetting it once none holds it; our hash
    /// of it when `tier` held it.
    pub(super) fn remove(&mut self, engine: u64, tier: StorageTier) -> Option<SequenceHash> {
        let entry = self.entry(engine).filter(|entry| entry.held_in(tier))?;
        let tiers = entry.tiers & !bit(tier);
        if tiers == 0 {
            if let Some(before) = self.salted.remove(&engine) {
                self.undo.push(Undo::Salted(engine, Some(before)));
            }
            self.set(engine, None);
        } else {
            self.set(engine, Some(Entry { tiers, ..entry }));
        }
        Some(entry.block.sequence)
    }

    /// Take `tier` from every block's tiers, forgetting the blocks no other tier holds.
    pub(super) fn clear(&mut self, tier: StorageTier) {
        let blocks = mem::take(&mut self.blocks);
        let salted = mem::take(&mut self.salted);
        self.blocks = blocks
            .iter()
            .filter_map(|(&engine, entry)| {
                let tiers = entry.tiers & !bit(tier);
                (tiers != 0).then_some((engine, Entry { tiers, ..*entry }))
            })
            .collect();
        self.salted = salted
            .iter()
            .filter(|(engine, _)| self.blocks.contains_key(engine))
            .map(|(&engine, &hasher)| (engine, hasher))
            .collect();
        self.undo.push(Undo::Cleared(blocks, salted));
    }

    /// The maps with every change kept.
    pub(super) fn keep(self) -> Maps {
        (self.blocks, self.salted)
    }

    /// The maps as they were before the first change.
    pub(super) fn roll_back(mut self) -> Maps {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Block(engine, Some(entry)) => {
                    self.blocks.insert(engine, entry);
                }
                Undo::Block(engine, None) => {
                    self.blocks.remove(&engine);
                }
                Undo::Salted(engine, Some(hasher)) => {
                    self.salted.insert(engine, hasher);
                }
                Undo::Salted(engine, None) => {
                    self.salted.remove(&engine);
                }
                Undo::Cleared(blocks, salted) => {
                    self.blocks = blocks;
                    self.salted = salted;
                }
            }
        }
        (self.blocks, self.salted)
    }

    /// Set (or, with `None`, forget) an engine block's entry, journaled.
    fn set(&mut self, engine: u64, entry: Option<Entry>) {
        let before = match entry {
            Some(entry) => self.blocks.insert(engine, entry),
            None => self.blocks.remove(&engine),
        };
        self.undo.push(Undo::Block(engine, before));
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::{BlockSize, LocalBlockHash};

    use super::*;
    use StorageTier::{Device, Host};

    fn block(n: u64) -> HashedBlock {
        HashedBlock {
            local: LocalBlockHash(n),
            sequence: SequenceHash::chain(None, LocalBlockHash(n)),
        }
    }

    fn salt() -> BlockHasher {
        BlockHasher::new(BlockSize::new(4).unwrap()).with_salt("tenant")
    }

    #[test]
    fn a_roll_back_restores_the_maps_through_inserts_removals_and_clears() {
        let mut known = Known::new(Default::default());
        known.insert(1, block(1), None, None, Device);
        known.insert(2, block(2), Some(1), Some(salt()), Device);
        known.insert(2, block(2), Some(1), Some(salt()), Host);
        let before = known.keep();
        let mut known = Known::new(before.clone());
        known.insert(1, block(10), None, Some(salt()), Device);
        known.insert(3, block(3), None, None, Host);
        assert_eq!(known.remove(2, Device), Some(block(2).sequence));
        assert_eq!(known.remove(9, Device), None);
        known.clear(Device);
        known.insert(4, block(4), None, Some(salt()), Device);
        assert_eq!(known.add_tier(4, Host).map(|e| e.tiers), Some(1));
        assert_eq!(known.remove(2, Host), Some(block(2).sequence));
        assert_eq!(known.block(4), Some(block(4).sequence));
        assert_eq!(known.salt(4), Some(salt()));
        assert_eq!(known.roll_back(), before);
    }

    #[test]
    fn a_block_leaves_with_its_last_tier() {
        let mut known = Known::new(Default::default());
        known.insert(1, block(1), None, Some(salt()), Device);
        assert!(known.add_tier(1, Host).is_some());
        assert_eq!(known.add_tier(2, Host), None, "never stored");
        assert_eq!(known.remove(1, Device), Some(block(1).sequence));
        assert_eq!(known.remove(1, Device), None, "no longer on the device");
        assert_eq!(
            known.block(1),
            Some(block(1).sequence),
            "still in host memory"
        );
        known.clear(Device);
        assert_eq!(
            known.salt(1),
            Some(salt()),
            "a clear of the device leaves host blocks"
        );
        assert_eq!(known.remove(1, Host), Some(block(1).sequence));
        assert_eq!(known.keep(), Maps::default());
    }

    #[test]
    fn a_block_stored_again_as_another_sequence_is_replaced() {
        let mut known = Known::new(Default::default());
        known.insert(1, block(1), None, None, Host);
        known.insert(1, block(7), None, None, Device);
        assert_eq!(
            known.remove(1, Host),
            None,
            "the host copy was of the old block"
        );
        assert_eq!(known.remove(1, Device), Some(block(7).sequence));
    }
}
