//! What the decoder knows of an engine's blocks, changed in place while a message decodes, with
//! an undo journal so that a message with a bad event leaves no trace.
//!
//! The journal costs one entry per change the message makes, where a copy of the maps would
//! cost every block the engine holds, on every message.

use std::collections::HashMap;
use std::mem;

use dynamo_core::{BlockHasher, SequenceHash};

/// Engine block hash → our sequence hash, and → the salted hasher of the salted blocks among
/// them; taken from the decoder for one message, and given back kept or rolled back.
pub(super) struct Known {
    blocks: HashMap<u64, SequenceHash>,
    salted: HashMap<u64, BlockHasher>,
    undo: Vec<Undo>,
}

/// How to take back one change.
enum Undo {
    /// The block's previous entry (`None`: it had none).
    Block(u64, Option<SequenceHash>),
    /// The block's previous salted hasher (`None`: it had none).
    Salted(u64, Option<BlockHasher>),
    /// The maps as they were before a clear.
    Cleared(HashMap<u64, SequenceHash>, HashMap<u64, BlockHasher>),
}

impl Known {
    pub(super) fn new(
        blocks: HashMap<u64, SequenceHash>,
        salted: HashMap<u64, BlockHasher>,
    ) -> Self {
        Known {
            blocks,
            salted,
            undo: Vec::new(),
        }
    }

    /// Our hash of an engine block.
    pub(super) fn block(&self, engine: u64) -> Option<SequenceHash> {
        self.blocks.get(&engine).copied()
    }

    /// The salted hasher of an engine block, if it is salted.
    pub(super) fn salt(&self, engine: u64) -> Option<BlockHasher> {
        self.salted.get(&engine).copied()
    }

    /// Record an engine block as our `sequence`, hashed with `salted` (`None`: unsalted).
    pub(super) fn insert(
        &mut self,
        engine: u64,
        sequence: SequenceHash,
        salted: Option<BlockHasher>,
    ) {
        let before = self.blocks.insert(engine, sequence);
        self.undo.push(Undo::Block(engine, before));
        let before = match salted {
            Some(hasher) => self.salted.insert(engine, hasher),
            None => self.salted.remove(&engine),
        };
        if before.is_some() || salted.is_some() {
            self.undo.push(Undo::Salted(engine, before));
        }
    }

    /// Forget an engine block; our hash of it, if it was known.
    pub(super) fn remove(&mut self, engine: u64) -> Option<SequenceHash> {
        if let Some(before) = self.salted.remove(&engine) {
            self.undo.push(Undo::Salted(engine, Some(before)));
        }
        let before = self.blocks.remove(&engine);
        if before.is_some() {
            self.undo.push(Undo::Block(engine, before));
        }
        before
    }

    /// Forget every block.
    pub(super) fn clear(&mut self) {
        let blocks = mem::take(&mut self.blocks);
        let salted = mem::take(&mut self.salted);
        self.undo.push(Undo::Cleared(blocks, salted));
    }

    /// The maps with every change kept.
    pub(super) fn keep(self) -> (HashMap<u64, SequenceHash>, HashMap<u64, BlockHasher>) {
        (self.blocks, self.salted)
    }

    /// The maps as they were before the first change.
    pub(super) fn roll_back(mut self) -> (HashMap<u64, SequenceHash>, HashMap<u64, BlockHasher>) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Block(engine, Some(sequence)) => {
                    self.blocks.insert(engine, sequence);
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
}

#[cfg(test)]
mod tests {
    use dynamo_core::{BlockSize, LocalBlockHash};

    use super::*;

    fn hash(n: u64) -> SequenceHash {
        SequenceHash::chain(None, LocalBlockHash(n))
    }

    #[test]
    fn a_roll_back_restores_the_maps_through_inserts_removals_and_clears() {
        let salt = BlockHasher::new(BlockSize::new(4).unwrap()).with_salt("tenant");
        let blocks = HashMap::from([(1, hash(1)), (2, hash(2))]);
        let salted = HashMap::from([(2, salt)]);
        let mut known = Known::new(blocks.clone(), salted.clone());
        known.insert(1, hash(10), Some(salt));
        known.insert(3, hash(3), None);
        assert_eq!(known.remove(2), Some(hash(2)));
        assert_eq!(known.remove(9), None);
        known.clear();
        known.insert(4, hash(4), Some(salt));
        known.insert(2, hash(20), None);
        assert_eq!(known.block(4), Some(hash(4)));
        assert_eq!(known.salt(4), Some(salt));
        assert_eq!(known.roll_back(), (blocks, salted));
    }

    #[test]
    fn kept_changes_stay() {
        let salt = BlockHasher::new(BlockSize::new(4).unwrap()).with_salt("tenant");
        let mut known = Known::new(HashMap::from([(1, hash(1))]), HashMap::from([(1, salt)]));
        known.insert(1, hash(10), None);
        known.insert(2, hash(2), Some(salt));
        assert_eq!(
            known.keep(),
            (
                HashMap::from([(1, hash(10)), (2, hash(2))]),
                HashMap::from([(2, salt)])
            )
        );
    }
}
