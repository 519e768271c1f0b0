//! Block hashing compatible with NVIDIA Dynamo's public router.
//!
//! A token sequence is cut into full blocks of [`BlockSize`] tokens. Each block gets a
//! [`LocalBlockHash`] of its content alone, and a [`SequenceHash`] that chains the hashes of
//! every block before it, so equal sequence hashes mean equal prefixes:
//!
//! - local hash: XXH3-64 of the block's token ids as little-endian `u32` bytes, seeded with
//!   1337, plus `XXH3-64(lora_name, seed 0)` when a LoRA adapter is named, plus
//!   `XXH3-64(salt, seed 1)` when a cache salt is set (wrapping additions; empty strings count
//!   as absent);
//! - sequence hash: `seq[0] = local[0]` and
//!   `seq[i] = XXH3-64(le_bytes(seq[i-1]) ‖ le_bytes(local[i]), seed 1337)`.

use std::fmt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::incremental::IncrementalHasher;
use crate::tokens::{BlockSize, Token};

/// The seed of every block hash that has no LoRA adapter and no salt.
pub const BASE_SEED: u64 = 1337;
const LORA_SEED: u64 = 0;
const SALT_SEED: u64 = 1;

/// The hash of one block's token content, independent of what precedes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocalBlockHash(pub u64);

/// The hash of a block together with every block before it: equal values mean equal prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SequenceHash(pub u64);

impl fmt::Display for LocalBlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Display for SequenceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl SequenceHash {
    /// The sequence hash of a block whose content hashes to `local`, following `parent`
    /// (`None` for the first block of a sequence).
    pub fn chain(parent: Option<SequenceHash>, local: LocalBlockHash) -> SequenceHash {
        let Some(parent) = parent else {
            return SequenceHash(local.0);
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&parent.0.to_le_bytes());
        bytes[8..].copy_from_slice(&local.0.to_le_bytes());
        SequenceHash(xxh3_64_with_seed(&bytes, BASE_SEED))
    }
}

/// Both hashes of one full block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashedBlock {
    /// The hash of the block's own tokens.
    pub local: LocalBlockHash,
    /// The hash of the block and its whole prefix.
    pub sequence: SequenceHash,
}

/// Hashes token sequences into blocks under one block size, LoRA adapter and cache salt.
///
/// A `BlockHasher` is a small `Copy` value: build it once per model and request kind and use it
/// everywhere the same blocks must get the same hashes.
///
/// ```
/// use dynamo_core::{BlockHasher, BlockSize};
///
/// let hasher = BlockHasher::new(BlockSize::new(4)?);
/// let tokens: Vec<u32> = (0..10).collect();
/// let blocks = hasher.hash_blocks(&tokens);
/// assert_eq!(blocks.len(), 2); // the last two tokens do not fill a block
/// assert_eq!(blocks[0].sequence.0, blocks[0].local.0);
///
/// // A LoRA adapter or a tenant salt gives every block a different hash.
/// let tenant = hasher.with_salt("tenant-a");
/// assert_ne!(tenant.hash_blocks(&tokens)[0], blocks[0]);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHasher {
    block_size: BlockSize,
    seed: u64,
}

impl BlockHasher {
    /// A hasher for blocks of `block_size` tokens, with no LoRA adapter and no salt.
    pub fn new(block_size: BlockSize) -> Self {
        BlockHasher {
            block_size,
            seed: BASE_SEED,
        }
    }

    /// The same hasher for requests served by the LoRA adapter `name`; an empty name changes
    /// nothing.
    pub fn with_lora(self, name: &str) -> Self {
        self.with_seed_part(name, LORA_SEED)
    }

    /// The same hasher with a cache salt (a tenant or namespace); an empty salt changes nothing.
    pub fn with_salt(self, salt: &str) -> Self {
        self.with_seed_part(salt, SALT_SEED)
    }

    fn with_seed_part(mut self, part: &str, part_seed: u64) -> Self {
        if !part.is_empty() {
            self.seed = self
                .seed
                .wrapping_add(xxh3_64_with_seed(part.as_bytes(), part_seed));
        }
        self
    }

    /// The block size this hasher cuts sequences into.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The seed of the local hashes, after the LoRA and salt adjustments.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The local hash of one block's tokens. The slice is hashed as given, whatever its length;
    /// callers normally pass exactly one full block.
    pub fn local_hash(&self, block: &[Token]) -> LocalBlockHash {
        LocalBlockHash(hash_tokens(block, self.seed))
    }

    /// The local hashes of every full block of `tokens`.
    pub fn local_hashes(&self, tokens: &[Token]) -> Vec<LocalBlockHash> {
        self.full_blocks(tokens)
            .map(|block| self.local_hash(block))
            .collect()
    }

    /// The sequence hashes of every full block of `tokens`.
    pub fn sequence_hashes(&self, tokens: &[Token]) -> Vec<SequenceHash> {
        self.hash_blocks(tokens)
            .into_iter()
            .map(|b| b.sequence)
            .collect()
    }

    /// Both hashes of every full block of `tokens`.
    pub fn hash_blocks(&self, tokens: &[Token]) -> Vec<HashedBlock> {
        let mut parent = None;
        self.full_blocks(tokens)
            .map(|block| {
                let local = self.local_hash(block);
                let sequence = SequenceHash::chain(parent, local);
                parent = Some(sequence);
                HashedBlock { local, sequence }
            })
            .collect()
    }

    /// An incremental hasher that starts from an empty sequence.
    pub fn incremental(&self) -> IncrementalHasher {
        IncrementalHasher::new(*self)
    }

    fn full_blocks<'a>(&self, tokens: &'a [Token]) -> std::slice::ChunksExact<'a, Token> {
        tokens.chunks_exact(self.block_size.as_usize())
    }
}

/// XXH3-64 of `tokens` as little-endian `u32` bytes.
fn hash_tokens(tokens: &[Token], seed: u64) -> u64 {
    if cfg!(target_endian = "little") {
        // Memory order is little-endian here: hash the tokens in place, without a copy.
        xxh3_64_with_seed(bytemuck::cast_slice(tokens), seed)
    } else {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        xxh3_64_with_seed(&bytes, seed)
    }
}
