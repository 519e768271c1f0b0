//! [`NixlSource`]: the prefill side of a NIXL hand-over, a registered slab that the block
//! server stages exported blocks in for decode workers to READ.

use std::collections::BTreeMap;

use dynamo_core::SequenceHash;
use parking_lot::Mutex;

use crate::nixl::nixl_error;
use crate::transfer::KvExports;
use crate::{Error, NixlAgent, NixlRegion};

/// A prefill worker's NIXL agent and a registered slab of `slots` blocks, given to its block
/// server ([`BlockServerConfig::nixl`](crate::BlockServerConfig::nixl)).
///
/// When a decode worker asks to stage a transfer, the server copies the transfer's leading
/// blocks that fit from the [`KvExports`] into free slots and answers with the agent's
/// metadata and the slots' addresses; the decode worker then READs them one-sided. The slots
/// are freed when the transfer is released through the server, and on the next stage once the
/// transfer is no longer live in the exports (expired or dropped). A slot is written only while
/// free: no live transfer names it.
///
/// # When full
///
/// A stage takes the leading blocks that fit in the free slots; where none fit, the decode
/// worker's [`NixlFetch`](super::NixlFetch) pulls over TCP instead.
#[derive(Debug)]
pub struct NixlSource {
    agent: NixlAgent,
    /// The agent's metadata, written once the slab is registered: the agent registers nothing
    /// else (it is not handed out), so it does not change.
    metadata: Vec<u8>,
    block_bytes: usize,
    slab: Mutex<Slab>,
}

#[derive(Debug)]
struct Slab {
    region: NixlRegion,
    free: Vec<usize>,
    staged: BTreeMap<u64, Vec<usize>>,
}

/// What [`NixlSource::stage`] staged.
#[derive(Debug)]
pub(crate) struct StagedBlocks {
    pub(crate) metadata: Vec<u8>,
    pub(crate) addresses: Vec<u64>,
}

impl NixlSource {
    /// `agent` with a slab of `slots` blocks of `block_bytes`, registered.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the slab is empty or does not fit the address space,
    /// [`Error::Nixl`] when NIXL refuses the registration.
    pub fn new(agent: NixlAgent, block_bytes: usize, slots: usize) -> Result<Self, Error> {
        let bytes = block_bytes
            .checked_mul(slots)
            .filter(|bytes| *bytes > 0)
            .ok_or_else(|| Error::Config {
                tier: dynamo_core::StorageTier::Host,
                reason: format!("a NIXL slab of {slots} blocks of {block_bytes} bytes"),
            })?;
        let args = agent.args()?;
        let region = NixlRegion::new(agent.agent(), Some(&args), bytes)
            .map_err(nixl_error("register the slab"))?;
        let metadata = agent
            .agent()
            .get_local_md()
            .map_err(nixl_error("write the agent's metadata"))?;
        Ok(NixlSource {
            agent,
            metadata,
            block_bytes,
            slab: Mutex::new(Slab {
                region,
                free: (0..slots).rev().collect(),
                staged: BTreeMap::new(),
            }),
        })
    }

    /// The agent's name.
    pub fn name(&self) -> String {
        self.agent.name()
    }

    /// Free slots.
    pub fn free_slots(&self) -> usize {
        self.slab.lock().free.len()
    }

    /// Copy the leading `hashes` of `transfer` that the exports hold and that fit into free
    /// slots. A transfer staged again keeps its slots and is staged afresh.
    pub(crate) fn stage(
        &self,
        exports: &KvExports,
        transfer: u64,
        hashes: &[SequenceHash],
    ) -> Result<StagedBlocks, Error> {
        if exports.block_bytes() != self.block_bytes {
            return Err(Error::Config {
                tier: dynamo_core::StorageTier::Host,
                reason: format!(
                    "exports of {}-byte blocks and a NIXL slab of {}-byte blocks",
                    exports.block_bytes(),
                    self.block_bytes
                ),
            });
        }
        let mut slab = self.slab.lock();
        let slab = &mut *slab;
        let dead: Vec<u64> = slab
            .staged
            .keys()
            .copied()
            .filter(|staged| exports.available(*staged, &[]).is_err())
            .collect();
        for staged in dead.into_iter().chain([transfer]) {
            if let Some(slots) = slab.staged.remove(&staged) {
                slab.free.extend(slots);
            }
        }
        let fit = hashes.len().min(slab.free.len());
        let blocks = exports.blocks(transfer, &hashes[..fit])?;
        let slots: Vec<usize> = (0..blocks.len()).filter_map(|_| slab.free.pop()).collect();
        let base = slab.region.address();
        let bytes = slab.region.as_mut_slice();
        for (slot, block) in slots.iter().zip(&blocks) {
            bytes[slot * self.block_bytes..(slot + 1) * self.block_bytes].copy_from_slice(block);
        }
        let addresses = slots
            .iter()
            .map(|slot| (base + slot * self.block_bytes) as u64)
            .collect();
        slab.staged.insert(transfer, slots);
        Ok(StagedBlocks {
            metadata: self.metadata.clone(),
            addresses,
        })
    }

    /// Free `transfer`'s slots.
    pub(crate) fn unstage(&self, transfer: u64) {
        let mut slab = self.slab.lock();
        if let Some(slots) = slab.staged.remove(&transfer) {
            slab.free.extend(slots);
        }
    }
}
