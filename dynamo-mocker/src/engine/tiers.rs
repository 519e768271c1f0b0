//! The worker's side of its lower tiers: copying computed prompt blocks down after a step,
//! starting an onboarding at admission, and registering the onboarded blocks when the copy
//! lands.

use super::{Sequence, SimWorker};

/// A sequence's copy from the lower tiers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Onboarding {
    /// When it lands on the device.
    pub(super) done_ms: f64,
    /// Blocks found on the device, then in host memory, then on disk.
    pub(super) device: usize,
    pub(super) host: usize,
    pub(super) disk: usize,
}

impl SimWorker {
    /// If `sequence`'s prompt continues in the host tier past its device prefix `found`,
    /// reserve device blocks for both and start copying the continuation; the sequence then
    /// waits in `onboarding`. The sequence back when there is nothing to onboard or no room for
    /// it (an `Option`, not a `Result`: not onboarding is no error).
    pub(super) fn start_onboarding(
        &mut self,
        mut sequence: Sequence,
        found: &[dynamo_kvbm::BlockId],
    ) -> Option<Sequence> {
        let Some(host) = &mut self.host else {
            return Some(sequence);
        };
        let block = u64::from(self.config.block_size.get());
        let prompt = ((sequence.request.prompt_tokens / block) as usize).min(sequence.blocks.len());
        let below = host.continuation(&sequence.blocks[..prompt], found.len(), self.now_ms);
        let more = below.blocks();
        if more == 0 || self.pool.obtainable() < found.len() + more {
            return Some(sequence);
        }
        sequence
            .pinned
            .extend(found.iter().filter_map(|&id| self.pool.pin(id)));
        if !self.pool.take(more, &mut sequence.private) {
            self.release(&mut sequence);
            return Some(sequence);
        }
        let not_before = below.ready_ms.max(self.now_ms);
        let done_ms = host.onboard(&sequence.blocks[..prompt], found.len(), &below, not_before);
        sequence.onboarding = Some(Onboarding {
            done_ms,
            device: found.len(),
            host: below.host,
            disk: below.disk,
        });
        self.onboarding.push(sequence);
        None
    }

    /// Register the blocks of every sequence whose copy from the host tier has ended by now, and
    /// queue those sequences first, in the order their copies ended.
    pub(super) fn finish_onboarding(&mut self) {
        let now = self.now_ms;
        let mut ready: Vec<Sequence> = Vec::new();
        let mut i = 0;
        while i < self.onboarding.len() {
            if self.onboarding[i]
                .onboarding
                .is_some_and(|onboarding| onboarding.done_ms <= now)
            {
                ready.push(self.onboarding.swap_remove(i));
            } else {
                i += 1;
            }
        }
        ready.sort_by(|a, b| {
            let end = |s: &Sequence| s.onboarding.map_or(0.0, |onboarding| onboarding.done_ms);
            end(b).total_cmp(&end(a))
        });
        for mut sequence in ready {
            for private in std::mem::take(&mut sequence.private) {
                let next = sequence.pinned.len();
                let parent = next.checked_sub(1).map(|p| sequence.blocks[p].sequence);
                let pinned = self.pool.register(private, parent, sequence.blocks[next]);
                sequence.pinned.push(pinned);
            }
            self.quiet_ahead = 0;
            self.waiting.push_front(sequence);
        }
    }

    /// After a step ending at `end_ms`: copy to the host tier the prompt blocks that the
    /// step's sequences have computed since their last copy.
    pub(super) fn copy_to_host(&mut self, plan: &[(usize, u64)], end_ms: f64) {
        let Some(host) = &mut self.host else {
            return;
        };
        let block = u64::from(self.config.block_size.get());
        for &(index, _) in plan {
            let sequence = &mut self.running[index];
            let prompt_tokens = sequence.request.prompt_tokens;
            let prompt = ((prompt_tokens / block) as usize).min(sequence.blocks.len());
            let computed = ((sequence.computed.min(prompt_tokens) / block) as usize).min(prompt);
            if computed > sequence.host_cursor
                && host.store(
                    &sequence.blocks[..prompt],
                    sequence.host_cursor,
                    computed,
                    end_ms,
                )
            {
                sequence.host_cursor = computed;
            }
        }
    }
}
