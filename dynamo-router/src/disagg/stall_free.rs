//! [`StallFreePlacement`]: no prompt is computed on a worker that is decoding.

use super::placement::{Placement, PlacementContext, PlacementPolicy};
use super::router_cost::costs;
use crate::policy::{ExpectedTtft, ExpectedTtftConfig};

/// Conditional disaggregation that places no prompt on a decoding worker: the decode worker
/// computes a prompt only while it decodes nothing, and only when that is cheaper than the
/// prefill worker by the expected-TTFT router's [`cost`](ExpectedTtft::cost); every other
/// prompt goes to the prefill worker and is handed over. Prefill workers only prefill. (A
/// request handed to the decode worker while it computes a prompt still shares those steps.)
///
/// With chunked prefill, a prompt computed on a worker shares its steps with every request
/// decoding there, and each waits for those steps: that stall is what local prefill costs the
/// time per output token (`docs/disaggregation.md`, "The TPOT floor"). This policy gives up a
/// decode worker's cache hit while it is busy rather than stall it, and keeps the hits it can
/// take for free: an idle decode worker's prefill stalls nobody. The decode candidate is the
/// worker the decode pool's router chose ([`DisaggRouter`](super::DisaggRouter) books it
/// first): a cache-aware decode router proposes the one that holds the prefix.
///
/// Both candidates are weighed as [`RouterCostPlacement`](super::RouterCostPlacement) weighs
/// them ([`Candidates`](super::Candidates), before this request's booking), the prefill
/// worker without stall or decode pressure (what it has booked are prompts, counted in its
/// queue) and plus the hand-over ([`transfer_ms_per_block`](Self::transfer_ms_per_block),
/// [`transfer_latency_ms`](Self::transfer_latency_ms)). Without candidates in the context, an
/// idle decode worker computes the prompt when it computes fewer tokens than the prefill
/// worker would.
///
/// In the replay of the Mooncake trace with 2 prefill and 6 decode workers it keeps the time
/// per output token of every prompt remote (6.541 ms, against NVIDIA Dynamo's 6.55) with a
/// p90 TTFT of 0.73–0.75× Dynamo's, but 1.48× that of aggregated serving; where decode workers
/// are seldom idle (4 and 4, the generated workloads) it hands nearly every prompt over, as
/// [`AlwaysRemote`](super::AlwaysRemote) does (`docs/disaggregation.md`).
///
/// ```
/// use dynamo_router::ExpectedTtftConfig;
/// use dynamo_router::disagg::{PlacementPolicy, StallFreePlacement};
///
/// let policy = StallFreePlacement::new(ExpectedTtftConfig::default());
/// assert!(!policy.prefill_workers_decode());
/// ```
#[derive(Debug)]
pub struct StallFreePlacement {
    router: ExpectedTtft,
    /// Milliseconds to move one block from the prefill to the decode worker. Default 0 (an
    /// instant hand-over, as the replay's default link).
    pub transfer_ms_per_block: f64,
    /// Fixed cost of a hand-over, ms. Default 0.
    pub transfer_latency_ms: f64,
    /// Whether the worker that computes a prompt pulls its longest cached prefix from another
    /// worker ([`pulling_prefix`](Self::pulling_prefix)). Default `false`.
    pub pull_prefix: bool,
}

impl StallFreePlacement {
    /// Weigh the candidates with the router of `config`: give it the pools' router's settings.
    pub fn new(config: ExpectedTtftConfig) -> Self {
        StallFreePlacement {
            router: ExpectedTtft::new(config),
            transfer_ms_per_block: 0.0,
            transfer_latency_ms: 0.0,
            pull_prefix: false,
        }
    }

    /// The same policy, with the worker that computes a prompt pulling its longest cached
    /// prefix from whichever worker holds it ([`PlacementPolicy::pulls_prefix`]), so that a
    /// busy decode worker's cache still serves the prompt without its decodes waiting for the
    /// prefill (`dynamo-replay --placement stall-free-pull`). Both candidates are then weighed
    /// with the longer of their two prefixes, and an idle decode worker keeps a prompt on a
    /// tie. Only the replay moves such a prefix today (its time on the link is added to the
    /// hand-over's for a prefill worker, and not charged for an idle decode worker);
    /// [`DisaggRouter`](super::DisaggRouter) computes the prompt from the chosen worker's own
    /// cache.
    pub fn pulling_prefix(self) -> Self {
        StallFreePlacement {
            pull_prefix: true,
            ..self
        }
    }

    /// The same policy, charging a hand-over `latency_ms` plus `ms_per_block` per full block.
    pub fn with_transfer(self, ms_per_block: f64, latency_ms: f64) -> Self {
        StallFreePlacement {
            transfer_ms_per_block: ms_per_block,
            transfer_latency_ms: latency_ms,
            ..self
        }
    }
}

impl Default for StallFreePlacement {
    fn default() -> Self {
        StallFreePlacement::new(ExpectedTtftConfig::default())
    }
}

impl PlacementPolicy for StallFreePlacement {
    fn place(&self, request: &PlacementContext) -> Placement {
        if request.decode_load.active_requests > 0 {
            return Placement::Remote;
        }
        let Some(candidates) = request.candidates else {
            let mut prefill_uncached = request.prefill.map_or(u64::MAX, |p| p.uncached_tokens);
            if self.pull_prefix {
                prefill_uncached = prefill_uncached.min(request.decode_uncached_tokens);
            }
            return if request.decode_uncached_tokens < prefill_uncached {
                Placement::Local
            } else {
                Placement::Remote
            };
        };
        // What a prefill worker has booked are prompts, already in its queued prompt tokens:
        // they neither wait for this prompt's steps nor decode beside it.
        let mut prefill = candidates.prefill;
        prefill.load.active_requests = 0;
        prefill.load.active_decode_blocks = 0;
        let transfer =
            self.transfer_latency_ms + self.transfer_ms_per_block * request.full_blocks() as f64;
        let mut decode = candidates.decode;
        if self.pull_prefix {
            // Either worker computes past the longer of the two prefixes, pulled from the
            // other; the link's time for it is left out (the prefix is the same either way).
            if decode.cached.total() > prefill.cached.total() {
                prefill.cached = decode.cached;
            } else {
                decode.cached = prefill.cached;
            }
        }
        let [remote, local] = costs(
            &self.router,
            request,
            candidates.prompt_blocks,
            [&prefill, &decode],
        );
        // With the prefix pulled, an idle decode worker that caches as much as the prefill
        // worker would have keeps the prompt on a tie: nothing to move, and its cache stays warm.
        if local < remote + transfer || (self.pull_prefix && local <= remote + transfer) {
            Placement::Local
        } else {
            Placement::Remote
        }
    }

    fn pulls_prefix(&self) -> bool {
        self.pull_prefix
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::BlockSize;

    use super::*;
    use crate::disagg::router_cost::tests::state;
    use crate::disagg::{Candidates, PrefillCandidate};
    use crate::policy::WorkerState;

    /// A prompt of 64 blocks of 64 tokens on the `prefill` and `decode` candidates.
    fn context(prefill: WorkerState, decode: WorkerState) -> PlacementContext {
        let block_size = BlockSize::new(64).expect("a block size");
        let uncached = |w: &WorkerState| 4096 - u64::from(w.cached.device) * 64;
        PlacementContext {
            prompt_tokens: 4096,
            block_size,
            decode_uncached_tokens: uncached(&decode),
            decode_load: decode.load,
            prefill: Some(PrefillCandidate {
                uncached_tokens: uncached(&prefill),
                load: prefill.load,
            }),
            candidates: Some(Candidates {
                decode,
                prefill,
                prompt_blocks: 64,
                prefill_share: 0.5,
                draw: 0.5,
            }),
        }
    }

    #[test]
    fn a_decoding_worker_never_computes_a_prompt() {
        let policy = StallFreePlacement::default();
        // Idle and caching most of the prompt: the decode worker computes it.
        assert_eq!(
            policy.place(&context(state(0, 0, 0), state(1, 60, 0))),
            Placement::Local
        );
        // The same cache hit on a worker decoding one request: handed over instead, however
        // much dearer the prefill worker is.
        assert_eq!(
            policy.place(&context(state(0, 0, 0), state(1, 63, 1))),
            Placement::Remote
        );
        // Idle but caching less than the prefill worker: remote.
        assert_eq!(
            policy.place(&context(state(0, 40, 0), state(1, 10, 0))),
            Placement::Remote
        );
        // The prefill worker's booked requests are prompts, not decodes: with their prompt
        // tokens computed already, they cost it nothing, and its larger cache hit wins.
        let mut queued = state(0, 60, 3);
        queued.load.active_prefill_tokens = 0;
        assert_eq!(
            policy.place(&context(queued, state(1, 50, 0))),
            Placement::Remote
        );
        assert!(!policy.prefill_workers_decode());
    }

    #[test]
    fn the_hand_over_counts_against_the_prefill_worker() {
        // Both idle, the prefill worker caching 8 blocks more: remote on an instant link,
        // local once moving 64 blocks costs more than computing 8 blocks.
        let even = context(state(0, 40, 0), state(1, 32, 0));
        assert_eq!(
            StallFreePlacement::default().place(&even),
            Placement::Remote
        );
        let slow = StallFreePlacement::default().with_transfer(5.0, 1.0);
        assert_eq!(slow.place(&even), Placement::Local);
    }

    #[test]
    fn a_pulling_prefill_worker_is_weighed_with_the_decode_worker_s_prefix() {
        let policy = StallFreePlacement::default().pulling_prefix();
        assert!(policy.pulls_prefix() && !StallFreePlacement::default().pulls_prefix());
        // A decoding worker caching most of the prompt: handed over, and the policy asks for
        // its prefix to be pulled.
        assert_eq!(
            policy.place(&context(state(0, 0, 0), state(1, 63, 1))),
            Placement::Remote
        );
        // Idle, the same prefix on either worker: the same cost, kept local.
        assert_eq!(
            policy.place(&context(state(0, 0, 0), state(1, 60, 0))),
            Placement::Local
        );
        // A prefill worker caching more: without pulling it wins; pulling, the idle decode
        // worker computes past the same prefix, pulled from it, and keeps the prompt.
        let deeper_remote = context(state(0, 40, 0), state(1, 10, 0));
        assert_eq!(
            StallFreePlacement::default().place(&deeper_remote),
            Placement::Remote
        );
        assert_eq!(policy.place(&deeper_remote), Placement::Local);
    }

    #[test]
    fn without_candidates_the_fewer_uncached_tokens_decide_on_an_idle_worker() {
        let policy = StallFreePlacement::default();
        let mut request = context(state(0, 0, 0), state(1, 60, 0));
        request.candidates = None;
        assert_eq!(policy.place(&request), Placement::Local);
        request.decode_load.active_requests = 2;
        assert_eq!(policy.place(&request), Placement::Remote);
    }
}
