//! [`RouterCostPlacement`]: a flexible-role prefill pool placed by the router's own cost, so
//! that two pools serve as one aggregated pool would.

use dynamo_core::{BlockSize, SequenceHash, WorkerId};

use super::placement::{Placement, PlacementContext, PlacementPolicy};
use crate::index::TierOverlap;
use crate::load::WorkerLoad;
use crate::policy::{ExpectedTtft, ExpectedTtftConfig, RouteContext, WorkerState};

/// The two candidates of a request as their pools' routers saw them, before this request's
/// bookings: what a placement needs to weigh them with a router's own cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidates {
    /// The decode pool's candidate.
    pub decode: WorkerState,
    /// The prefill pool's candidate.
    pub prefill: WorkerState,
    /// The prompt's full blocks.
    pub prompt_blocks: u32,
    /// The prefill pool's share of all the workers, in `[0, 1]`: a tie between the candidates
    /// goes to the prefill one this often, as one router over both pools would break it.
    pub prefill_share: f64,
    /// A number in `[0, 1)` drawn for this request, for ties ([`draw`]).
    pub draw: f64,
}

/// What a pool's router saw of a worker before it booked a request there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unbooked {
    /// The prompt's leading blocks the worker caches, by tier.
    pub cached: TierOverlap,
    /// The prompt's leading blocks the worker's other requests hold.
    pub in_flight: u32,
    /// The worker's load, this request's booking included.
    pub booked: WorkerLoad,
}

impl Unbooked {
    /// The worker's state without the booking of a prompt of `prompt_tokens` and
    /// `prompt_blocks` full blocks: the request, its uncached tokens and the blocks no other
    /// request held taken off again.
    pub fn state(
        self,
        worker: WorkerId,
        prompt_tokens: u64,
        prompt_blocks: u32,
        block_size: BlockSize,
    ) -> WorkerState {
        let held = self.cached.total().max(self.in_flight);
        let uncached = prompt_tokens.saturating_sub(u64::from(held) * u64::from(block_size.get()));
        let added_blocks = prompt_blocks.saturating_sub(self.in_flight.min(prompt_blocks));
        let load = WorkerLoad {
            active_requests: self.booked.active_requests.saturating_sub(1),
            active_prefill_tokens: self.booked.active_prefill_tokens.saturating_sub(uncached),
            active_decode_blocks: self
                .booked
                .active_decode_blocks
                .saturating_sub(u64::from(added_blocks)),
            ..self.booked
        };
        WorkerState {
            worker,
            cached: self.cached,
            in_flight: self.in_flight,
            load,
        }
    }
}

/// A number in `[0, 1)` that depends only on `key` (a request's index or id): the tie-break
/// draw of [`Candidates`], the same from run to run.
pub fn draw(key: u64) -> f64 {
    // SplitMix64's finaliser.
    let mut x = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A flexible-role prefill pool in which the request goes whole to whichever candidate (the
/// prefill pool's best worker or the decode pool's) the expected-TTFT router's
/// [`cost`](ExpectedTtft::cost) prefers, ties broken in proportion to the pools' sizes. With
/// each pool routed by the same policy, that is the worker one router over both pools would
/// choose: the two pools serve as aggregated workers do, and the split never costs TTFT against
/// aggregated serving. It never hands a prompt over ([`Placement::Remote`]); without
/// [`Candidates`] in the context it keeps the request on its decode worker.
#[derive(Debug)]
pub struct RouterCostPlacement {
    router: ExpectedTtft,
}

impl RouterCostPlacement {
    /// Weigh the candidates with the router of `config`: give it the pools' router's settings.
    pub fn new(config: ExpectedTtftConfig) -> Self {
        RouterCostPlacement {
            router: ExpectedTtft::new(config),
        }
    }
}

/// `router`'s [`cost`](ExpectedTtft::cost) of `request`, a prompt of `prompt_blocks` full
/// blocks, on each of `workers`.
pub(super) fn costs<const N: usize>(
    router: &ExpectedTtft,
    request: &PlacementContext,
    prompt_blocks: u32,
    workers: [&WorkerState; N],
) -> [f64; N] {
    // The cost reads the prompt's hashes only for their number.
    let blocks = vec![SequenceHash(0); prompt_blocks as usize];
    let route = RouteContext {
        blocks: &blocks,
        prompt_tokens: request.prompt_tokens,
        block_size: request.block_size,
        expected_output_tokens: None,
    };
    workers.map(|worker| router.cost(&route, worker))
}

impl Default for RouterCostPlacement {
    fn default() -> Self {
        RouterCostPlacement::new(ExpectedTtftConfig::default())
    }
}

impl PlacementPolicy for RouterCostPlacement {
    fn place(&self, request: &PlacementContext) -> Placement {
        let Some(candidates) = request.candidates else {
            return Placement::Local;
        };
        let [prefill, decode] = costs(
            &self.router,
            request,
            candidates.prompt_blocks,
            [&candidates.prefill, &candidates.decode],
        );
        let tie = (prefill - decode).abs() <= 1e-9 * prefill.abs().max(1.0);
        let to_prefill = if tie {
            candidates.draw < candidates.prefill_share
        } else {
            prefill < decode
        };
        if to_prefill {
            Placement::PrefillWorker
        } else {
            Placement::Local
        }
    }

    fn prefill_workers_decode(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::disagg::placement::PrefillCandidate;

    /// Worker `id` caching `cached` of the prompt's blocks, with `requests` active.
    pub(in crate::disagg) fn state(id: u64, cached: u32, requests: u32) -> WorkerState {
        WorkerState {
            worker: WorkerId::new(id),
            cached: TierOverlap {
                device: cached,
                ..TierOverlap::default()
            },
            in_flight: 0,
            load: WorkerLoad {
                active_requests: requests,
                ..WorkerLoad::default()
            },
        }
    }

    fn context(prefill: WorkerState, decode: WorkerState, draw: f64) -> PlacementContext {
        PlacementContext {
            prompt_tokens: 4096,
            block_size: BlockSize::new(64).expect("a block size"),
            decode_uncached_tokens: 4096,
            decode_load: decode.load,
            prefill: Some(PrefillCandidate {
                uncached_tokens: 4096,
                load: prefill.load,
            }),
            candidates: Some(Candidates {
                decode,
                prefill,
                prompt_blocks: 64,
                prefill_share: 0.25,
                draw,
            }),
        }
    }

    #[test]
    fn the_request_goes_whole_where_the_router_would_send_it() {
        let policy = RouterCostPlacement::default();
        // The prefill worker caches half the prompt: it serves the whole request.
        let cached = context(state(0, 32, 0), state(1, 0, 0), 0.9);
        assert_eq!(policy.place(&cached), Placement::PrefillWorker);
        // The decode worker caches it: local.
        let local = context(state(0, 0, 0), state(1, 32, 0), 0.1);
        assert_eq!(policy.place(&local), Placement::Local);
        // Equal costs: the draw against the prefill pool's share of the workers decides.
        let tied = |draw| policy.place(&context(state(0, 0, 0), state(1, 0, 0), draw));
        assert_eq!(tied(0.1), Placement::PrefillWorker);
        assert_eq!(tied(0.9), Placement::Local);
        // Without the candidates' states, the decode worker computes the prompt.
        let mut unknown = cached;
        unknown.candidates = None;
        assert_eq!(policy.place(&unknown), Placement::Local);
        assert!(policy.prefill_workers_decode());
    }

    #[test]
    fn a_worker_seen_without_the_booking_is_the_router_s_view() {
        let block_size = BlockSize::new(64).expect("a block size");
        let unbooked = Unbooked {
            cached: TierOverlap {
                device: 10,
                ..TierOverlap::default()
            },
            in_flight: 4,
            booked: WorkerLoad {
                active_requests: 3,
                active_prefill_tokens: 5000,
                active_decode_blocks: 100,
                expected_output_tokens: 0,
                kv_capacity_blocks: None,
            },
        };
        // A prompt of 1,000 tokens past its 10 cached blocks, 26 full blocks of which 4 were
        // held by another request.
        let state = unbooked.state(WorkerId::new(7), 1640, 26, block_size);
        assert_eq!(state.load.active_requests, 2);
        assert_eq!(state.load.active_prefill_tokens, 4000);
        assert_eq!(state.load.active_decode_blocks, 78);
        assert!((0.0..1.0).contains(&draw(42)));
        assert_ne!(draw(1), draw(2));
    }
}
