//! TensorRT-LLM's cache levels as the router's storage tiers, and what the decoder remembers
//! of each block the server holds.
//!
//! The KV cache manager numbers its levels from the fastest: 0 is the primary level, GPU
//! memory (`kPrimaryLevel`), 1 the secondary level, pinned host memory (`kSecondaryLevel`),
//! where a block is offloaded before its GPU block is reused and from where it is onboarded
//! again. The newer KV cache manager numbers its configured tiers the same way (GPU memory,
//! then host memory when it has a host quota, then disk when it has a disk quota), so 2 is
//! its disk tier; the events do not name the tier, so a server with a disk tier and no host
//! tier (`host_cache_size: 0`) has its disk at level 1, which reads here as host memory.

use dynamo_core::{HashedBlock, SequenceHash, StorageTier};

/// The tier of each cache level, by level.
const TIERS: [StorageTier; 3] = [StorageTier::Device, StorageTier::Host, StorageTier::Disk];

/// A cache level that has a tier here (0, 1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Level(u8);

impl Level {
    /// The primary level, GPU memory.
    pub(super) const DEVICE: Level = Level(0);

    /// Level `value` of an event, if it has a tier here.
    pub(super) fn new(value: i64) -> Option<Level> {
        u8::try_from(value)
            .ok()
            .filter(|&level| usize::from(level) < TIERS.len())
            .map(Level)
    }

    /// Every level, fastest first.
    pub(super) fn all() -> impl Iterator<Item = Level> {
        (0..TIERS.len() as u8).map(Level)
    }

    /// The router's tier for this level.
    pub(super) fn tier(self) -> StorageTier {
        TIERS[usize::from(self.0)]
    }

    /// This level's bit in a [`Levels`] set.
    fn bit(self) -> u8 {
        1 << self.0
    }
}

/// A set of levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Levels(u8);

impl Levels {
    pub(super) fn insert(&mut self, level: Level) {
        self.0 |= level.bit();
    }

    pub(super) fn contains(self, level: Level) -> bool {
        self.0 & level.bit() != 0
    }
}

/// An engine block the server holds: our hashes of it, the sequence hash of the block it was
/// stored after, and the level it is at (one at a time, as a block of the KV cache manager
/// lives in one memory pool).
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) block: HashedBlock,
    pub(super) parent: Option<SequenceHash>,
    pub(super) level: Level,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_0_to_2_have_tiers_and_no_other() {
        let tiers: Vec<_> = [0, 1, 2]
            .map(|value| Level::new(value).map(Level::tier))
            .to_vec();
        assert_eq!(
            tiers,
            [
                Some(StorageTier::Device),
                Some(StorageTier::Host),
                Some(StorageTier::Disk)
            ]
        );
        for value in [-1, 3, 256, i64::MAX] {
            assert_eq!(Level::new(value), None, "{value}");
        }
        let mut levels = Levels::default();
        levels.insert(Level(2));
        assert!(levels.contains(Level(2)) && !levels.contains(Level::DEVICE));
    }
}
