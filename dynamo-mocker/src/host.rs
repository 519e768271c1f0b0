//! A simulated host-memory tier (G2) below a worker's device cache, with the transfer-time model
//! of NVIDIA Dynamo's mocker (`native_host_offload`), so that replays of the two agree.
//!
//! - **Write-through on compute.** After each step, the full prompt blocks a scheduled request
//!   has computed and the tier lacks are copied to host memory as one batch, submitted when the
//!   step ends. Output blocks are not copied; nothing is copied on device eviction.
//! - **Copies take time.** Device-to-host and host-to-device copies each queue on a lane of
//!   their own: a batch starts when its lane is free and its first byte has waited
//!   `latency_ms`, and lasts `blocks × bytes per block / bandwidth`. A block whose copy is still
//!   in flight occupies the tier; a request that needs it waits for it.
//! - **Onboarding.** A waiting request whose prompt continues in host memory past its device
//!   prefix reserves device blocks for the continuation and waits, outside the batch, until the
//!   host-to-device copy ends; it is then admitted first, with the onboarded blocks cached.
//!   Onboarding costs the step nothing: other requests run meanwhile.
//! - **Eviction** is least recently used. Looking a request up refreshes every prompt block the
//!   tier holds, the last first, so a prompt's first block ends up the most recent.
//! - The tier reports `Stored` and `Removed` events with tier `Host`, which the router's index
//!   credits at the host weight.
//! - **A disk tier (G3) below**, optional and ours: blocks the host tier evicts are written to
//!   the worker's local disk (one write lane, `latency_ms` then bytes over bandwidth); a prompt
//!   that continues on disk past the host is read back (one read lane) and then copied to the
//!   device with the host blocks. Disk blocks are promoted back into the host tier when read.
//!   Events carry tier `Disk`. (Dynamo's G3 is a tier shared by all workers and written through
//!   from the host; a per-worker disk fed by host evictions is the design of this crate family,
//!   see `docs/kvbm.md`.)
//!
//! Two fences of Dynamo's model are left out: a device block reused while its copy to host is
//! still in flight does not delay the step, and a preempted request does not wait for its last
//! copy. Both are rare on the public traces (`docs/kvbm.md` compares the two replays).

use std::collections::HashMap;

use dynamo_core::{BlockSize, HashedBlock, KvEventData, SequenceHash, StorageTier};
use dynamo_kvbm::{Dropped, Offer, TierIndex};

/// A worker's host tier, as NVIDIA Dynamo's mocker models it; its defaults are Dynamo's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostTierConfig {
    /// Blocks the tier holds (per worker).
    pub blocks: u64,
    /// KV bytes per token, which sizes every copy. Default 131,072 (Llama-3-8B in bf16: 32
    /// layers × K and V × 8 KV heads × 128 × 2 bytes).
    pub kv_bytes_per_token: u64,
    /// Device-to-host bandwidth in GB/s (10⁹ bytes); 0 copies at once. Default 32.
    pub d2h_gb_per_s: f64,
    /// Host-to-device bandwidth in GB/s; 0 copies at once. Default 32.
    pub h2d_gb_per_s: f64,
    /// The wait before each batch's first byte, in ms. Default 0.
    pub latency_ms: f64,
}

/// A worker's local disk tier below its host tier (the defaults are those of Dynamo's G3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskTierConfig {
    /// Blocks the tier holds (per worker).
    pub blocks: u64,
    /// Read and write bandwidth, each, in GB/s; 0 copies at once. Default 10.
    pub gb_per_s: f64,
    /// The wait before each batch's first byte, in ms. Default 0.1.
    pub latency_ms: f64,
}

impl Default for DiskTierConfig {
    fn default() -> Self {
        DiskTierConfig {
            blocks: 0,
            gb_per_s: 10.0,
            latency_ms: 0.1,
        }
    }
}

impl Default for HostTierConfig {
    fn default() -> Self {
        HostTierConfig {
            blocks: 0,
            kv_bytes_per_token: 131_072,
            d2h_gb_per_s: 32.0,
            h2d_gb_per_s: 32.0,
            latency_ms: 0.0,
        }
    }
}

/// One copy direction: batches run one after another.
#[derive(Debug, Default)]
struct Lane {
    /// When the last batch ends.
    free_at_ms: f64,
}

impl Lane {
    /// Queue a batch that may start at `ready_ms` and lasts `duration_ms`; when it ends.
    fn submit(&mut self, ready_ms: f64, duration_ms: f64) -> f64 {
        let end = self.free_at_ms.max(ready_ms) + duration_ms;
        self.free_at_ms = end;
        end
    }
}

/// The time to copy one block at `gb_per_s`, in ms.
fn block_copy_ms(block_bytes: f64, gb_per_s: f64) -> f64 {
    if gb_per_s > 0.0 {
        block_bytes / (gb_per_s * 1e6)
    } else {
        0.0
    }
}

/// How far a prompt continues below the device, found by [`HostTier::continuation`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Continuation {
    /// Blocks in host memory, in the run right after the device prefix.
    pub(crate) host: usize,
    /// Blocks on disk only, in the same run.
    pub(crate) disk: usize,
    /// When the last of those blocks has landed in its tier.
    pub(crate) ready_ms: f64,
}

impl Continuation {
    pub(crate) fn blocks(&self) -> usize {
        self.host + self.disk
    }
}

/// The disk tier below a host tier.
#[derive(Debug)]
struct DiskTier {
    index: TierIndex,
    arriving: HashMap<SequenceHash, f64, foldhash::fast::RandomState>,
    read: Lane,
    write: Lane,
    block_ms: f64,
    latency_ms: f64,
    dropped: Vec<Dropped>,
}

impl DiskTier {
    /// Write the blocks the host tier dropped, as one batch from `at_ms`.
    fn write(&mut self, blocks: &[Dropped], at_ms: f64) {
        if blocks.is_empty() {
            return;
        }
        let arrives = self
            .write
            .submit(at_ms + self.latency_ms, blocks.len() as f64 * self.block_ms);
        for block in blocks {
            if self
                .index
                .offer(block.block, block.parent, &mut self.dropped)
                == Offer::Stored
            {
                self.arriving.insert(block.block.sequence, arrives);
            }
            for gone in self.dropped.drain(..) {
                self.arriving.remove(&gone.block.sequence);
            }
        }
    }
}

/// The host tier of one simulated worker, and the disk tier below it if any.
#[derive(Debug)]
pub(crate) struct HostTier {
    disk: Option<DiskTier>,
    index: TierIndex,
    /// Blocks whose copy to host ends later: when.
    arriving: HashMap<SequenceHash, f64, foldhash::fast::RandomState>,
    d2h: Lane,
    h2d: Lane,
    d2h_block_ms: f64,
    h2d_block_ms: f64,
    latency_ms: f64,
    /// Scratch for the blocks the tier drops.
    dropped: Vec<Dropped>,
    /// Scratch for a batch to store.
    batch: Vec<usize>,
}

impl HostTier {
    pub(crate) fn new(
        config: &HostTierConfig,
        disk: Option<&DiskTierConfig>,
        block_size: BlockSize,
    ) -> Self {
        let block_bytes = (config.kv_bytes_per_token * u64::from(block_size.get())) as f64;
        HostTier {
            disk: disk.filter(|disk| disk.blocks > 0).map(|disk| DiskTier {
                index: TierIndex::new(
                    StorageTier::Disk,
                    usize::try_from(disk.blocks).unwrap_or(usize::MAX),
                    block_size,
                ),
                arriving: HashMap::default(),
                read: Lane::default(),
                write: Lane::default(),
                block_ms: block_copy_ms(block_bytes, disk.gb_per_s),
                latency_ms: disk.latency_ms.max(0.0),
                dropped: Vec::new(),
            }),
            index: TierIndex::new(
                StorageTier::Host,
                usize::try_from(config.blocks).unwrap_or(usize::MAX),
                block_size,
            ),
            arriving: HashMap::default(),
            d2h: Lane::default(),
            h2d: Lane::default(),
            d2h_block_ms: block_copy_ms(block_bytes, config.d2h_gb_per_s),
            h2d_block_ms: block_copy_ms(block_bytes, config.h2d_gb_per_s),
            latency_ms: config.latency_ms.max(0.0),
            dropped: Vec::new(),
            batch: Vec::new(),
        }
    }

    /// How far `blocks[start..]` continues in host memory or on disk, and when the last of
    /// those blocks has landed (`now_ms` if none is in flight). Refreshes every block of
    /// `blocks` the host holds, the last first.
    pub(crate) fn continuation(
        &mut self,
        blocks: &[HashedBlock],
        start: usize,
        now_ms: f64,
    ) -> Continuation {
        let mut found = Continuation {
            ready_ms: now_ms,
            ..Continuation::default()
        };
        for block in blocks.get(start..).unwrap_or_default() {
            if self.index.contains(block.sequence) {
                found.host += 1;
                landed(
                    &mut self.arriving,
                    block.sequence,
                    now_ms,
                    &mut found.ready_ms,
                );
            } else if let Some(disk) = &mut self.disk
                && disk.index.contains(block.sequence)
            {
                found.disk += 1;
                landed(
                    &mut disk.arriving,
                    block.sequence,
                    now_ms,
                    &mut found.ready_ms,
                );
            } else {
                break;
            }
        }
        self.refresh(blocks);
        found
    }

    /// Mark every block of `blocks` the tier holds as used, the last first.
    fn refresh(&mut self, blocks: &[HashedBlock]) {
        for block in blocks.iter().rev() {
            self.index.touch(block.sequence);
        }
    }

    /// Queue the copy to the device of `found`, the continuation of `blocks[start..]`, not
    /// before `not_before_ms`: disk blocks are read back into host memory first. When the copy
    /// to the device ends.
    pub(crate) fn onboard(
        &mut self,
        blocks: &[HashedBlock],
        start: usize,
        found: &Continuation,
        not_before_ms: f64,
    ) -> f64 {
        let mut host_ready = not_before_ms;
        if let Some(disk) = &mut self.disk
            && found.disk > 0
        {
            host_ready = disk.read.submit(
                not_before_ms + disk.latency_ms,
                found.disk as f64 * disk.block_ms,
            );
            let run = start..(start + found.blocks()).min(blocks.len());
            for i in run {
                if self.index.contains(blocks[i].sequence) {
                    continue;
                }
                let parent = i.checked_sub(1).map(|p| blocks[p].sequence);
                disk.index.touch(blocks[i].sequence);
                self.index.offer(blocks[i], parent, &mut self.dropped);
            }
            let dropped = std::mem::take(&mut self.dropped);
            for gone in &dropped {
                self.arriving.remove(&gone.block.sequence);
            }
            disk.write(&dropped, not_before_ms);
            self.dropped = dropped;
            self.dropped.clear();
        }
        self.h2d.submit(
            host_ready + self.latency_ms,
            found.blocks() as f64 * self.h2d_block_ms,
        )
    }

    /// After a step ending at `end_ms`: copy the blocks of `prompt[from..to]` the tier lacks,
    /// as one batch. `false` (nothing copied) when the batch would not fit in the whole tier.
    pub(crate) fn store(
        &mut self,
        prompt: &[HashedBlock],
        from: usize,
        to: usize,
        end_ms: f64,
    ) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        batch.extend((from..to).filter(|&i| !self.index.contains(prompt[i].sequence)));
        if batch.len() > self.index.capacity() {
            self.batch = batch;
            return false;
        }
        if !batch.is_empty() {
            let arrives = self.d2h.submit(
                end_ms + self.latency_ms,
                batch.len() as f64 * self.d2h_block_ms,
            );
            for &i in &batch {
                let parent = i.checked_sub(1).map(|p| prompt[p].sequence);
                if self.index.offer(prompt[i], parent, &mut self.dropped) == Offer::Stored
                    && arrives > end_ms
                {
                    self.arriving.insert(prompt[i].sequence, arrives);
                }
            }
            // What the host dropped to make room goes to disk, as one batch.
            for dropped in &self.dropped {
                self.arriving.remove(&dropped.block.sequence);
            }
            if let Some(disk) = &mut self.disk {
                disk.write(&self.dropped, end_ms);
            }
            self.dropped.clear();
        }
        self.batch = batch;
        self.refresh(&prompt[..to.min(prompt.len())]);
        true
    }

    /// The tiers' cache changes since the last call, appended to `into`: the host's, then the
    /// disk's.
    pub(crate) fn take_events_into(&mut self, into: &mut Vec<(StorageTier, KvEventData)>) {
        let host = self.index.take_events();
        into.extend(host.into_iter().map(|event| (StorageTier::Host, event)));
        if let Some(disk) = &mut self.disk {
            let events = disk.index.take_events();
            into.extend(events.into_iter().map(|event| (StorageTier::Disk, event)));
        }
    }
}

/// Raise `ready_ms` to when `hash` lands in its tier, if its copy is still in flight.
fn landed(
    arriving: &mut HashMap<SequenceHash, f64, foldhash::fast::RandomState>,
    hash: SequenceHash,
    now_ms: f64,
    ready_ms: &mut f64,
) {
    if let Some(&arrives) = arriving.get(&hash) {
        if arrives <= now_ms {
            arriving.remove(&hash);
        } else {
            *ready_ms = ready_ms.max(arrives);
        }
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::BlockHasher;

    use super::*;

    fn tier(blocks: u64) -> (HostTier, Vec<HashedBlock>) {
        let block_size = BlockSize::new(64).expect("a valid block size");
        let config = HostTierConfig {
            blocks,
            ..HostTierConfig::default()
        };
        let tokens: Vec<u32> = (0..64 * 4).collect();
        let prompt = BlockHasher::new(block_size).hash_blocks(&tokens);
        (HostTier::new(&config, None, block_size), prompt)
    }

    #[test]
    fn copies_queue_on_their_lane_and_take_bytes_over_bandwidth() {
        let (mut host, prompt) = tier(16);
        // 64 tokens × 131,072 bytes at 32 GB/s: 0.262144 ms per block.
        assert!(host.store(&prompt, 0, 2, 10.0));
        assert!(host.store(&prompt, 2, 4, 10.0));
        let found = host.continuation(&prompt, 0, 10.0);
        assert_eq!((found.host, found.disk), (4, 0));
        let ready = found.ready_ms;
        assert!((ready - (10.0 + 4.0 * 0.262_144)).abs() < 1e-9, "{ready}");
        let done = host.onboard(&prompt, 0, &found, ready);
        assert!((done - (ready + 4.0 * 0.262_144)).abs() < 1e-9);
        let found = host.continuation(&prompt, 0, 20.0);
        assert_eq!(found.ready_ms, 20.0, "the copies have landed");
    }

    #[test]
    fn a_batch_larger_than_the_tier_is_not_copied() {
        let (mut host, prompt) = tier(3);
        assert!(!host.store(&prompt, 0, 4, 0.0));
        assert_eq!(host.continuation(&prompt, 0, 0.0).blocks(), 0);
        assert!(host.store(&prompt, 0, 3, 0.0));
        let mut events = Vec::new();
        host.take_events_into(&mut events);
        assert_eq!(events.len(), 1, "one chain: {events:?}");
    }

    #[test]
    fn blocks_the_host_drops_go_to_disk_and_come_back_through_it() {
        let block_size = BlockSize::new(64).expect("a valid block size");
        let host = HostTierConfig {
            blocks: 2,
            ..HostTierConfig::default()
        };
        let disk = DiskTierConfig {
            blocks: 8,
            ..DiskTierConfig::default()
        };
        let mut tiers = HostTier::new(&host, Some(&disk), block_size);
        let tokens: Vec<u32> = (0..64 * 4).collect();
        let prompt = BlockHasher::new(block_size).hash_blocks(&tokens);
        assert!(tiers.store(&prompt, 0, 2, 0.0));
        assert!(tiers.store(&prompt, 2, 4, 0.0));
        // The host keeps the last two; the first two went to disk.
        let found = tiers.continuation(&prompt, 0, 100.0);
        assert_eq!((found.host, found.disk), (2, 2));
        let mut events = Vec::new();
        tiers.take_events_into(&mut events);
        let disk_stored = events
            .iter()
            .filter(|(tier, event)| {
                *tier == StorageTier::Disk && matches!(event, KvEventData::Stored { .. })
            })
            .count();
        assert!(disk_stored > 0, "{events:?}");
        // Two blocks read from disk at 10 GB/s after 0.1 ms, then four copied to the device at
        // 32 GB/s.
        let done = tiers.onboard(&prompt, 0, &found, 100.0);
        let block_bytes = 64.0 * 131_072.0;
        let expected = 100.0 + 0.1 + 2.0 * block_bytes / 10e6 + 4.0 * block_bytes / 32e6;
        assert!((done - expected).abs() < 1e-9, "{done} vs {expected}");
    }
}
