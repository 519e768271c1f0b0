//! Hashing a sequence as it grows, one decode step at a time.

use crate::hash::{BlockHasher, HashedBlock, LocalBlockHash, SequenceHash};
use crate::tokens::Token;

/// Hashes a growing token sequence without rehashing its prefix.
///
/// Feed it tokens as they are generated; it returns the hashes of the blocks that each call
/// completes, chained onto the blocks before them. The result is the same as hashing the whole
/// sequence at once with [`BlockHasher::hash_blocks`], for any way of splitting the tokens.
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize};
///
/// let hasher = BlockHasher::new(BlockSize::new(4)?);
/// let mut incremental = hasher.incremental();
/// assert!(incremental.extend(&[1, 2, 3]).is_empty()); // no block is full yet
/// let completed = incremental.extend(&[4, 5]);
/// assert_eq!(completed, hasher.hash_blocks(&[1, 2, 3, 4]));
/// assert_eq!(incremental.pending_tokens(), &[5]);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct IncrementalHasher {
    hasher: BlockHasher,
    pending: Vec<Token>,
    last: Option<SequenceHash>,
    completed_blocks: usize,
}

impl IncrementalHasher {
    /// An incremental hasher over an empty sequence.
    pub fn new(hasher: BlockHasher) -> Self {
        IncrementalHasher {
            pending: Vec::with_capacity(hasher.block_size().as_usize()),
            hasher,
            last: None,
            completed_blocks: 0,
        }
    }

    /// Append `tokens` and return the blocks they complete, in order.
    pub fn extend(&mut self, tokens: &[Token]) -> Vec<HashedBlock> {
        let mut completed = Vec::new();
        self.extend_into(tokens, &mut completed);
        completed
    }

    /// Append one token; returns the block it completes, if any.
    pub fn push(&mut self, token: Token) -> Option<HashedBlock> {
        self.pending.push(token);
        self.complete_pending()
    }

    /// Append `tokens`, pushing the blocks they complete onto `out` (no allocation when none
    /// completes).
    pub fn extend_into(&mut self, mut tokens: &[Token], out: &mut Vec<HashedBlock>) {
        let block_size = self.hasher.block_size().as_usize();
        // Top up a partly filled block first, then hash whole blocks straight from the input.
        if !self.pending.is_empty() {
            let take = (block_size - self.pending.len()).min(tokens.len());
            self.pending.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            out.extend(self.complete_pending());
        }
        let mut blocks = tokens.chunks_exact(block_size);
        for block in &mut blocks {
            out.push(self.chain(block));
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// The hash of the last completed block, if any.
    pub fn last_sequence_hash(&self) -> Option<SequenceHash> {
        self.last
    }

    /// The number of blocks completed so far.
    pub fn completed_blocks(&self) -> usize {
        self.completed_blocks
    }

    /// The tokens after the last full block, waiting for the block to fill.
    pub fn pending_tokens(&self) -> &[Token] {
        &self.pending
    }

    /// The hasher whose scheme this follows.
    pub fn hasher(&self) -> &BlockHasher {
        &self.hasher
    }

    fn complete_pending(&mut self) -> Option<HashedBlock> {
        if self.pending.len() < self.hasher.block_size().as_usize() {
            return None;
        }
        let local = self.hasher.local_hash(&self.pending);
        self.pending.clear();
        Some(self.advance(local))
    }

    fn chain(&mut self, block: &[Token]) -> HashedBlock {
        let local = self.hasher.local_hash(block);
        self.advance(local)
    }

    fn advance(&mut self, local: LocalBlockHash) -> HashedBlock {
        let sequence = SequenceHash::chain(self.last, local);
        self.last = Some(sequence);
        self.completed_blocks += 1;
        HashedBlock { local, sequence }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::BlockSize;

    #[test]
    fn one_token_at_a_time_matches_one_shot() {
        let hasher = BlockHasher::new(BlockSize::new(3).unwrap());
        let tokens: Vec<Token> = (100..111).collect();
        let mut incremental = hasher.incremental();
        let blocks: Vec<_> = tokens.iter().filter_map(|&t| incremental.push(t)).collect();
        assert_eq!(blocks, hasher.hash_blocks(&tokens));
        assert_eq!(incremental.completed_blocks(), 3);
        assert_eq!(incremental.pending_tokens(), &[109, 110]);
        assert_eq!(
            incremental.last_sequence_hash(),
            blocks.last().map(|b| b.sequence)
        );
    }

    #[test]
    fn block_size_one_completes_every_token() {
        let hasher = BlockHasher::new(BlockSize::new(1).unwrap());
        let mut incremental = hasher.incremental();
        assert_eq!(incremental.extend(&[5, 6, 7]).len(), 3);
        assert!(incremental.pending_tokens().is_empty());
    }
}
