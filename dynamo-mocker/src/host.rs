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
//!
//! Two fences of Dynamo's model are left out: a device block reused while its copy to host is
//! still in flight does not delay the step, and a preempted request does not wait for its last
//! copy. Both are rare on the public traces (`docs/simulator.md` compares the two replays).

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

/// The host tier of one simulated worker.
#[derive(Debug)]
pub(crate) struct HostTier {
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
    pub(crate) fn new(config: &HostTierConfig, block_size: BlockSize) -> Self {
        let block_bytes = (config.kv_bytes_per_token * u64::from(block_size.get())) as f64;
        HostTier {
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

    /// How many of `blocks[start..]` the tier holds in a row, and when the last of their copies
    /// to host ends (`now_ms` if none is in flight). Refreshes every block of `blocks` it holds,
    /// the last first.
    pub(crate) fn continuation(
        &mut self,
        blocks: &[HashedBlock],
        start: usize,
        now_ms: f64,
    ) -> (usize, f64) {
        let mut ready = now_ms;
        let mut found = 0;
        for block in blocks.get(start..).unwrap_or_default() {
            if !self.index.contains(block.sequence) {
                break;
            }
            if let Some(&arrives) = self.arriving.get(&block.sequence) {
                if arrives <= now_ms {
                    self.arriving.remove(&block.sequence);
                } else {
                    ready = ready.max(arrives);
                }
            }
            found += 1;
        }
        self.refresh(blocks);
        (found, ready)
    }

    /// Mark every block of `blocks` the tier holds as used, the last first.
    fn refresh(&mut self, blocks: &[HashedBlock]) {
        for block in blocks.iter().rev() {
            self.index.touch(block.sequence);
        }
    }

    /// Queue the copy of `blocks` blocks to the device, not before `not_before_ms`; when it
    /// ends.
    pub(crate) fn onboard(&mut self, blocks: usize, not_before_ms: f64) -> f64 {
        self.h2d.submit(
            not_before_ms + self.latency_ms,
            blocks as f64 * self.h2d_block_ms,
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
                for dropped in self.dropped.drain(..) {
                    self.arriving.remove(&dropped.block.sequence);
                }
            }
        }
        self.batch = batch;
        self.refresh(&prompt[..to.min(prompt.len())]);
        true
    }

    /// The tier's cache changes since the last call, appended to `into`.
    pub(crate) fn take_events_into(&mut self, into: &mut Vec<KvEventData>) {
        self.index.take_events_into(into);
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
        (HostTier::new(&config, block_size), prompt)
    }

    #[test]
    fn copies_queue_on_their_lane_and_take_bytes_over_bandwidth() {
        let (mut host, prompt) = tier(16);
        // 64 tokens × 131,072 bytes at 32 GB/s: 0.262144 ms per block.
        assert!(host.store(&prompt, 0, 2, 10.0));
        assert!(host.store(&prompt, 2, 4, 10.0));
        let (found, ready) = host.continuation(&prompt, 0, 10.0);
        assert_eq!(found, 4);
        assert!((ready - (10.0 + 4.0 * 0.262_144)).abs() < 1e-9, "{ready}");
        let done = host.onboard(4, ready);
        assert!((done - (ready + 4.0 * 0.262_144)).abs() < 1e-9);
        let (_, ready) = host.continuation(&prompt, 0, 20.0);
        assert_eq!(ready, 20.0, "the copies have landed");
    }

    #[test]
    fn a_batch_larger_than_the_tier_is_not_copied() {
        let (mut host, prompt) = tier(3);
        assert!(!host.store(&prompt, 0, 4, 0.0));
        assert_eq!(host.continuation(&prompt, 0, 0.0).0, 0);
        assert!(host.store(&prompt, 0, 3, 0.0));
        let mut events = Vec::new();
        host.take_events_into(&mut events);
        assert_eq!(events.len(), 1, "one chain: {events:?}");
    }
}
