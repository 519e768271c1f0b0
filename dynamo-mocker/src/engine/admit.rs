//! Admission: waiting requests join the running batch while the step's budget, the sequence
//! cap and the cache allow.

use super::{HandedOverKv, LowerTierHit, SimWorker};

impl SimWorker {
    /// Move waiting sequences to running while the budget, the sequence cap and the cache
    /// allow. A sequence whose prompt continues in the host tier starts onboarding instead.
    pub(super) fn admit(&mut self, budget: &mut u64, plan: &mut Vec<(usize, u64)>) {
        let block = u64::from(self.config.block_size.get());
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(mut sequence) = self.waiting.pop_front() else {
                break;
            };
            let tokens = sequence.tokens();
            let full = ((tokens / block) as usize).min(sequence.blocks.len());
            // An onboarded sequence holds its prefix already; any other looks it up.
            let onboarded = sequence.onboarding.take();
            let mut found = std::mem::take(&mut self.found);
            found.clear();
            let transferred = sequence.handed_over.is_some();
            if onboarded.is_none() && sequence.handed_over != Some(HandedOverKv::Discarded) {
                self.pool
                    .cached_prefix(&sequence.blocks[..full], &mut found);
            }
            // A handed-over prompt has its KV: it onboards nothing.
            if onboarded.is_none() && !transferred {
                match self.start_onboarding(sequence, &found) {
                    None => {
                        self.found = found;
                        continue;
                    }
                    Some(not_onboarding) => sequence = not_onboarding,
                }
            }
            let held = sequence.pinned.len();
            let mut hit = if onboarded.is_some() {
                held
            } else {
                found.len()
            };
            // At least one token is always computed, to produce the next one; a handed-over
            // prompt is all there, and its next token is a decode.
            while !transferred && hit > 0 && hit as u64 * block >= tokens {
                hit -= 1;
            }
            found.truncate(hit);
            // A pulled prefix longer than the hit arrives in fresh blocks; like a hit, it
            // leaves at least one token to compute.
            let mut pulled = sequence.pulled.min(full).max(hit);
            while pulled > hit && pulled as u64 * block >= tokens {
                pulled -= 1;
            }
            let (computed, chunk) = if transferred {
                (tokens, 1)
            } else {
                let computed = pulled as u64 * block;
                (computed, (tokens - computed).min(*budget))
            };
            let needed = (computed + chunk).div_ceil(block) - hit as u64;
            if self.pool.obtainable() + held < (needed + hit as u64) as usize {
                self.found = found;
                sequence.onboarding = onboarded;
                self.waiting.push_front(sequence);
                break;
            }
            if onboarded.is_some() {
                // Blocks onboarded past what the sequence may count as cached go back.
                let mut beyond = sequence.pinned.split_off(hit);
                self.pool.release(&mut beyond);
            } else {
                sequence
                    .pinned
                    .extend(found.iter().filter_map(|&id| self.pool.pin(id)));
            }
            self.found = found;
            if !self.pool.take(needed as usize, &mut sequence.private) {
                self.pool.release(&mut sequence.pinned);
                self.waiting.push_front(sequence);
                break;
            }
            sequence.computed = computed;
            if transferred {
                sequence.cached_tokens = Some(0);
            }
            if sequence.cached_tokens.is_none() {
                sequence.cached_tokens = Some(computed);
                self.cached.push((sequence.request.id, computed));
                if let Some(found) = onboarded {
                    // Credit the tiers in order: the device's prefix, the host's, the disk's.
                    let device = (found.device as u64 * block).min(computed);
                    let host = (found.host as u64 * block).min(computed - device);
                    self.lower_tier_hits.push(LowerTierHit {
                        id: sequence.request.id,
                        host_tokens: host,
                        disk_tokens: (found.disk as u64 * block).min(computed - device - host),
                    });
                }
            }
            // A recomputation after preemption copies nothing it copied before; an onboarded
            // prefix is in the host tier already.
            sequence.host_cursor = sequence.host_cursor.max(hit);
            *budget -= chunk;
            plan.push((self.running.len(), chunk));
            sequence.pulled = 0;
            self.running.push(sequence);
        }
    }
}
