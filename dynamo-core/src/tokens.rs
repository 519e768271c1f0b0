//! Token sequences that are cheap to share and slice, and the block size that cuts them.

use std::fmt;
use std::num::NonZeroU32;
use std::ops::{Bound, Deref, RangeBounds};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A token id, as produced by a tokenizer.
pub type Token = u32;

/// An immutable sequence of token ids that is cheap to clone and to slice.
///
/// Cloning and slicing share one allocation, so a prompt can travel from the frontend through
/// the router to a worker without being copied. `Tokens` dereferences to `&[Token]`.
///
/// ```
/// use dynamo_core::Tokens;
///
/// let prompt = Tokens::from(vec![1, 2, 3, 4, 5]);
/// let tail = prompt.slice(2..);
/// assert_eq!(&*tail, &[3, 4, 5]);
/// assert_eq!(tail.slice(..1), Tokens::from(vec![3]));
/// ```
#[derive(Clone)]
pub struct Tokens {
    data: Arc<[Token]>,
    start: usize,
    end: usize,
}

impl Tokens {
    /// An empty sequence.
    pub fn new() -> Self {
        Self::from(Vec::new())
    }

    /// The tokens as a slice.
    pub fn as_slice(&self) -> &[Token] {
        // The bounds are checked on construction and by `slice`.
        &self.data[self.start..self.end]
    }

    /// A sub-sequence sharing this one's allocation.
    ///
    /// # Panics
    ///
    /// Panics if the range is out of bounds, like slice indexing. Use [`Tokens::try_slice`] with
    /// ranges that come from input.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Tokens {
        let (start, end) = self.bounds(range);
        assert!(
            start <= end && end <= self.len(),
            "range {start}..{end} out of bounds for {} tokens",
            self.len()
        );
        self.sub(start, end)
    }

    /// A sub-sequence sharing this one's allocation, or `None` if the range is out of bounds.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<Tokens> {
        let (start, end) = self.bounds(range);
        (start <= end && end <= self.len()).then(|| self.sub(start, end))
    }

    /// The full blocks of `block_size` tokens, in order; a trailing partial block is left out.
    ///
    /// ```
    /// use dynamo_core::{BlockSize, Tokens};
    ///
    /// let tokens = Tokens::from((0..10).collect::<Vec<u32>>());
    /// let blocks: Vec<&[u32]> = tokens.blocks(BlockSize::new(4)?).collect();
    /// assert_eq!(blocks, [&[0, 1, 2, 3][..], &[4, 5, 6, 7][..]]);
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    pub fn blocks(&self, block_size: BlockSize) -> std::slice::ChunksExact<'_, Token> {
        self.as_slice().chunks_exact(block_size.as_usize())
    }

    fn bounds(&self, range: impl RangeBounds<usize>) -> (usize, usize) {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len(),
        };
        (start, end)
    }

    fn sub(&self, start: usize, end: usize) -> Tokens {
        Tokens {
            data: Arc::clone(&self.data),
            start: self.start + start,
            end: self.start + end,
        }
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Tokens {
    type Target = [Token];

    fn deref(&self) -> &[Token] {
        self.as_slice()
    }
}

impl AsRef<[Token]> for Tokens {
    fn as_ref(&self) -> &[Token] {
        self.as_slice()
    }
}

impl From<Vec<Token>> for Tokens {
    fn from(tokens: Vec<Token>) -> Self {
        let end = tokens.len();
        Tokens {
            data: tokens.into(),
            start: 0,
            end,
        }
    }
}

impl From<&[Token]> for Tokens {
    fn from(tokens: &[Token]) -> Self {
        Tokens {
            data: tokens.into(),
            start: 0,
            end: tokens.len(),
        }
    }
}

impl FromIterator<Token> for Tokens {
    fn from_iter<I: IntoIterator<Item = Token>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Tokens {}

impl std::hash::Hash for Tokens {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Tokens {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Token>::deserialize(deserializer).map(Tokens::from)
    }
}

/// The number of tokens in a KV-cache block; never zero.
///
/// Every component that hashes or counts blocks (engines, router, block manager) must agree on
/// it: blocks of different sizes never share a hash.
///
/// ```
/// use dynamo_core::BlockSize;
///
/// assert_eq!(BlockSize::new(64)?.get(), 64);
/// assert!(BlockSize::new(0).is_err());
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BlockSize(NonZeroU32);

impl BlockSize {
    /// A block size of `tokens` tokens.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] if `tokens` is zero.
    pub fn new(tokens: u32) -> Result<Self, Error> {
        NonZeroU32::new(tokens)
            .map(BlockSize)
            .ok_or_else(|| Error::invalid_request("block size must be at least 1 token"))
    }

    /// The block size in tokens.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The block size in tokens, as a `usize` for indexing.
    pub const fn as_usize(self) -> usize {
        self.0.get() as usize
    }

    /// How many full blocks `tokens` tokens make.
    pub const fn full_blocks(self, tokens: usize) -> usize {
        tokens / self.as_usize()
    }

    /// How many blocks are needed to hold `tokens` tokens, counting a partial last block.
    pub const fn blocks_needed(self, tokens: usize) -> usize {
        tokens.div_ceil(self.as_usize())
    }
}

impl TryFrom<u32> for BlockSize {
    type Error = Error;

    fn try_from(tokens: u32) -> Result<Self, Error> {
        BlockSize::new(tokens)
    }
}

impl From<BlockSize> for u32 {
    fn from(size: BlockSize) -> u32 {
        size.get()
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_storage_and_nest() {
        let tokens = Tokens::from((0..100).collect::<Vec<u32>>());
        let middle = tokens.slice(10..90);
        let inner = middle.slice(5..=9);
        assert_eq!(&*inner, &[15, 16, 17, 18, 19]);
        assert!(Arc::ptr_eq(&tokens.data, &inner.data));
        assert_eq!(middle.try_slice(70..81), None);
        assert_eq!(middle.try_slice(80..), Some(Tokens::new()));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slice_out_of_bounds_panics_like_a_slice() {
        let _ = Tokens::from(vec![1, 2]).slice(1..3);
    }

    #[test]
    fn blocks_skip_the_partial_tail() {
        let tokens: Tokens = (0..9).collect();
        let size = BlockSize::new(3).unwrap();
        assert_eq!(tokens.blocks(size).count(), 3);
        assert_eq!(tokens.slice(..8).blocks(size).count(), 2);
        assert_eq!(size.full_blocks(8), 2);
        assert_eq!(size.blocks_needed(8), 3);
    }

    #[test]
    fn zero_block_size_is_an_error() {
        let err = BlockSize::new(0).unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::InvalidRequest);
        let parsed: Result<BlockSize, _> = serde_json::from_str("0");
        assert!(parsed.is_err());
        let parsed: BlockSize = serde_json::from_str("16").unwrap();
        assert_eq!(parsed.get(), 16);
    }

    #[test]
    fn serializes_as_a_plain_list() {
        let tokens = Tokens::from(vec![7, 8, 9]).slice(1..);
        let json = serde_json::to_string(&tokens).unwrap();
        assert_eq!(json, "[8,9]");
        let back: Tokens = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tokens);
    }
}
