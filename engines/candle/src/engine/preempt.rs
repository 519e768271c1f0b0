//! Preemption by recompute, as vLLM does it: when a decode step needs a block and the pool
//! has none, the newest running sequence gives its blocks back (its full blocks stay cached
//! until evicted) and waits at the front of the queue to compute its tokens again.

use std::sync::atomic::Ordering;

use dynamo_kvbm::PrivateBlock;

use super::ModelThread;

impl ModelThread {
    /// Take `opening` blocks into `opened` for `running[index]`'s part of this step,
    /// preempting the newest running sequences not yet in the step while the pool is short
    /// (`preempted` lists them), `running[index]` itself last. `false` when it was preempted.
    ///
    /// The running sequences are in the order they started, and this step's decoding
    /// sequences are visited in that order before any prompt chunk; only decoding sequences
    /// open blocks. So every sequence after `index` is not yet in the step.
    pub(super) fn make_room(
        &mut self,
        index: usize,
        opening: usize,
        opened: &mut Vec<PrivateBlock>,
        preempted: &mut Vec<usize>,
    ) -> bool {
        while !self.pool.take(opening, opened) {
            let newest = (index..self.running.len())
                .rev()
                .find(|i| !preempted.contains(i))
                .unwrap_or(index);
            self.preempt(newest);
            preempted.push(newest);
            if newest == index {
                return false;
            }
        }
        true
    }

    /// Give `running[index]`'s blocks back; it keeps its tokens, sampler and grammar, and its
    /// client has every token it sampled.
    fn preempt(&mut self, index: usize) {
        let sequence = &mut self.running[index];
        sequence.release(&mut self.pool);
        sequence.computed = 0;
        sequence.hashes.clear();
        self.preemptions.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            request = %sequence.request,
            tokens = sequence.tokens.len(),
            "preempted: its KV blocks are freed and it will compute its tokens again"
        );
    }
}
