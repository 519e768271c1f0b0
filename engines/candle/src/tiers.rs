//! The KV cache's lower tiers on the model thread: the bytes of evicted blocks go to host
//! memory (and from there to a disk), and a request whose prompt continues past the cached
//! prefix onboards the next blocks from them instead of computing them.

use std::path::PathBuf;
use std::sync::Arc;

use dynamo_core::{BlockSize, HashedBlock, KvPublisher, WorkerId};
use dynamo_kvbm::{
    BlockPool, BlockStore, DiskConfig, DiskStore, Held, HostStore, LowerTier, LowerTiers,
    OffloadConfig, PrivateBlock, SeenTwice,
};

use crate::forward::KvStore;

/// A disk tier below the KV cache (and below the host tier, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTier {
    /// The folder of the tier's file (`candle-worker-<id>-<rank>.kv`, created or truncated, kept after
    /// the engine stops).
    pub dir: PathBuf,
    /// Its capacity in blocks.
    pub blocks: u32,
    /// Write only blocks offered a second time within a window as large as the tier (the
    /// `SeenTwice` admission filter), so that prefixes seen once never wear the disk; otherwise
    /// every block the tier above evicts is written.
    pub repeats_only: bool,
}

/// The lower tiers and the model thread's buffers for moving bytes to and from them.
#[derive(Debug)]
pub(crate) struct Tiers {
    lower: LowerTiers,
    /// One block's bytes, on their way down.
    block: Vec<u8>,
    /// The bytes of the blocks being onboarded.
    onboarded: Vec<u8>,
}

impl Tiers {
    /// The tiers `host_blocks` and `disk` ask for, fastest first, with the worker that writes
    /// past the first on a thread of its own; `None` when they ask for none.
    pub(crate) fn start(
        host_blocks: u32,
        disk: Option<&DiskTier>,
        block_size: BlockSize,
        block_bytes: usize,
        worker: WorkerId,
    ) -> std::io::Result<Option<Self>> {
        let mut tiers: Vec<LowerTier> = Vec::new();
        if host_blocks > 0 {
            let host =
                HostStore::new(block_bytes, host_blocks as usize).map_err(std::io::Error::other)?;
            tiers.push(LowerTier::new(Arc::new(host), block_size));
        }
        if let Some(disk) = disk.filter(|disk| disk.blocks > 0) {
            let path = disk.dir.join(format!(
                "candle-worker-{}-{}.kv",
                worker.worker, worker.dp_rank
            ));
            let config = DiskConfig::new(path, block_bytes, disk.blocks as usize);
            let store: Arc<dyn BlockStore> =
                Arc::new(DiskStore::open(config).map_err(std::io::Error::other)?);
            let mut tier = LowerTier::new(store, block_size);
            if disk.repeats_only {
                tier.index = tier
                    .index
                    .with_admission(SeenTwice::new(disk.blocks as usize));
            }
            tiers.push(tier);
        }
        if tiers.is_empty() {
            return Ok(None);
        }
        let (lower, offload) =
            LowerTiers::new(tiers, OffloadConfig::default()).map_err(std::io::Error::other)?;
        std::thread::Builder::new()
            .name("dynamo-candle-offload".to_owned())
            .spawn(move || offload.run())?;
        Ok(Some(Tiers {
            lower,
            block: vec![0; block_bytes],
            onboarded: Vec::new(),
        }))
    }

    /// A handle on the tiers, for their counters.
    pub(crate) fn lower(&self) -> &LowerTiers {
        &self.lower
    }

    /// Offload the blocks `pool` evicted since the last call, from `store`, where their bytes
    /// still are: call it after taking blocks and before writing them.
    pub(crate) fn offload_evicted(&mut self, pool: &mut BlockPool, store: &KvStore) {
        for evicted in pool.take_evicted() {
            store.read_block(evicted.id, &mut self.block);
            // The buffer is the tiers' block size, so this cannot fail.
            let _ = self
                .lower
                .offload(evicted.block, evicted.parent, &self.block);
        }
    }

    /// Onboard the leading blocks of `blocks` the tiers hold into `into`'s blocks, in order, in
    /// `store`; how many. `into` has at least as many blocks as `blocks`.
    pub(crate) fn onboard(
        &mut self,
        blocks: &[HashedBlock],
        into: &[PrivateBlock],
        store: &mut KvStore,
    ) -> usize {
        let blocks = &blocks[..blocks.len().min(into.len())];
        let found = self.lower.onboard(blocks, &mut self.onboarded);
        let size = self.lower.block_bytes();
        for (bytes, block) in self.onboarded.chunks_exact(size).zip(into) {
            store.write_block(block.id(), bytes);
        }
        found
    }

    /// Send the tiers' KV events, each with its tier.
    pub(crate) fn publish(&self, publisher: &KvPublisher) {
        for (tier, change) in self.lower.take_events() {
            publisher.publish(tier, change);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dynamo_core::BlockHasher;

    use super::*;

    #[test]
    fn a_repeats_only_disk_writes_a_block_the_second_time_the_host_evicts_it() {
        let block_size = BlockSize::new(4).expect("a valid block size");
        let dir =
            std::env::temp_dir().join(format!("dynamo-candle-repeats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp folder");
        let disk = DiskTier {
            dir: dir.clone(),
            blocks: 8,
            repeats_only: true,
        };
        let tiers = Tiers::start(1, Some(&disk), block_size, 4096, WorkerId::new(7))
            .expect("tiers start")
            .expect("tiers were asked for");
        let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (a, b) = (blocks[0], blocks[1]);
        let bytes = vec![1u8; 4096];
        // The one-block host tier evicts A, then B, then A again: only A's second eviction
        // reaches the disk.
        for block in [a, b, a, b] {
            tiers
                .lower
                .offload(block, None, &bytes)
                .expect("block-sized bytes");
        }
        assert!(tiers.lower.wait_idle(Duration::from_secs(10)));
        let counters = tiers.lower.counters();
        let disk = &counters.tiers[1];
        assert_eq!((disk.held, disk.index.declined), (1, 2), "{counters:?}");
        drop(tiers);
        let _ = std::fs::remove_dir_all(dir);
    }
}
