//! The incumbent's KV-aware cost, our baseline.

use smallvec::SmallVec;

use super::choose::{SharedRng, lowest_of};
use super::{Decision, RouteContext, Router, WorkerState};
use crate::index::TierOverlap;

/// How much a cached block is worth, by the tier it is cached in (1.0: as good as computed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierCredits {
    /// Device memory. Default 1.0.
    pub device: f64,
    /// Host memory. Default 0.75.
    pub host: f64,
    /// Local disk. Default 0.25.
    pub disk: f64,
    /// Remote storage. Default 0.0.
    pub remote: f64,
}

impl Default for TierCredits {
    fn default() -> Self {
        TierCredits {
            device: 1.0,
            host: 0.75,
            disk: 0.25,
            remote: 0.0,
        }
    }
}

impl TierCredits {
    /// The credit, in blocks, of a cached prefix.
    pub fn credit(&self, cached: &TierOverlap) -> f64 {
        self.device * f64::from(cached.device)
            + self.host * f64::from(cached.host)
            + self.disk * f64::from(cached.disk)
            + self.remote * f64::from(cached.remote)
    }
}

/// The settings of [`KvCost`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvCostConfig {
    /// The credit of a cached block per tier.
    pub credits: TierCredits,
    /// The weight of the prefill term. Default 1.0.
    pub prefill_scale: f64,
    /// The cost, in blocks, of each active request on the worker. Default 0.0.
    pub request_weight: f64,
    /// 0.0 (the default) picks the lowest cost; above 0, a softmax sample over normalised
    /// costs at this temperature.
    pub temperature: f64,
    /// A seed for reproducible tie-breaks and samples; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for KvCostConfig {
    fn default() -> Self {
        KvCostConfig {
            credits: TierCredits::default(),
            prefill_scale: 1.0,
            request_weight: 0.0,
            temperature: 0.0,
            seed: None,
        }
    }
}

/// NVIDIA Dynamo's KV-aware cost, kept as the baseline our own policy must beat.
///
/// For each worker, in blocks:
///
/// ```text
/// cost = prefill_scale · max(0, (active_prefill_tokens + prompt_tokens) / block_size − credit)
///      + decode_blocks + request_weight · active_requests
/// credit = 1.0 · device + 0.75 · host + 0.25 · disk   (cached prefix blocks per tier)
/// decode_blocks = active decode blocks + the prompt blocks not already held by active
///                 requests on the worker + 1
/// ```
///
/// The lowest cost wins and exact ties are broken at random; a temperature above zero samples
/// from a softmax over normalised costs instead.
///
/// ```
/// use dynamo_core::{BlockSize, SequenceHash, WorkerId};
/// use dynamo_router::{Decision, KvCost, RouteContext, Router, TierOverlap, WorkerState};
///
/// let blocks = [SequenceHash(1), SequenceHash(2)];
/// let request = RouteContext {
///     blocks: &blocks,
///     prompt_tokens: 128,
///     block_size: BlockSize::new(64)?,
///     expected_output_tokens: None,
/// };
/// let idle = |id, device| WorkerState {
///     worker: WorkerId::new(id),
///     cached: TierOverlap { device, ..Default::default() },
///     in_flight: 0,
///     load: Default::default(),
/// };
/// // With equal load, the deeper cached prefix wins.
/// let decision = KvCost::default().route(&request, &[idle(1, 1), idle(2, 2)]);
/// assert_eq!(decision, Decision::Route(WorkerId::new(2)));
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug)]
pub struct KvCost {
    config: KvCostConfig,
    rng: SharedRng,
}

impl KvCost {
    /// The policy with these settings.
    pub fn new(config: KvCostConfig) -> Self {
        KvCost {
            rng: SharedRng::new(config.seed),
            config,
        }
    }

    /// The cost of sending `request` to `worker`, in blocks.
    pub fn cost(&self, request: &RouteContext<'_>, worker: &WorkerState) -> f64 {
        let block_size = f64::from(request.block_size.get());
        self.cost_with(request, worker, |tokens| tokens / block_size)
    }

    /// [`cost`](Self::cost), with `blocks_of` turning tokens into blocks.
    #[inline(always)]
    fn cost_with(
        &self,
        request: &RouteContext<'_>,
        worker: &WorkerState,
        blocks_of: impl Fn(f64) -> f64,
    ) -> f64 {
        let load = &worker.load;
        let queued = blocks_of((load.active_prefill_tokens + request.prompt_tokens) as f64);
        let prefill = (queued - self.config.credits.credit(&worker.cached)).max(0.0);
        let decode = worker.decode_blocks_with(request) as f64;
        self.config.prefill_scale * prefill
            + decode
            + self.config.request_weight * f64::from(load.active_requests)
    }

    /// Every worker's [`cost`](Self::cost), in their order, appended to `costs`, in a pass
    /// without a branch, whose divisions by the block size are multiplications by its
    /// reciprocal when it is a power of two (exact then, so the same costs bit for bit).
    fn fill(&self, request: &RouteContext<'_>, workers: &[WorkerState], costs: &mut Costs) {
        let block_size = f64::from(request.block_size.get());
        if request.block_size.get().is_power_of_two() {
            let per_token = 1.0 / block_size;
            costs.extend(
                workers
                    .iter()
                    .map(|worker| self.cost_with(request, worker, |tokens| tokens * per_token)),
            );
        } else {
            costs.extend(workers.iter().map(|worker| self.cost(request, worker)));
        }
    }
}

/// A decision's costs, inline up to 128 workers.
type Costs = SmallVec<[f64; 128]>;

impl Default for KvCost {
    fn default() -> Self {
        KvCost::new(KvCostConfig::default())
    }
}

impl Router for KvCost {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        // Computed first, then compared: the comparisons' branches do not wait on each
        // worker's arithmetic.
        let mut costs = Costs::new();
        self.fill(request, workers, &mut costs);
        lowest_of(
            workers,
            costs.iter().copied(),
            self.config.temperature,
            &self.rng,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerLoad;
    use dynamo_core::{BlockSize, SequenceHash, WorkerId};

    #[test]
    fn costs_side_by_side_are_each_workers_cost_bit_for_bit() {
        let mut next = crate::test_rng::below_from(0x2545_F491_4F6C_DD1D);
        let blocks: Vec<_> = (0..40).map(SequenceHash).collect();
        let policies = [
            KvCost::default(),
            KvCost::new(KvCostConfig {
                credits: TierCredits {
                    device: 0.9,
                    host: 0.6,
                    disk: 0.3,
                    remote: 0.1,
                },
                prefill_scale: 1.7,
                request_weight: 0.35,
                ..KvCostConfig::default()
            }),
        ];
        for policy in &policies {
            for _ in 0..300 {
                let len = next(41) as usize;
                let request = RouteContext {
                    blocks: &blocks[..len],
                    prompt_tokens: len as u64 * 64 + next(64),
                    block_size: BlockSize::new([16, 64, 100][next(3) as usize]).expect("non-zero"),
                    expected_output_tokens: None,
                };
                // Batches whole and cut (up to two and a half of them), most workers holding
                // some of the prompt, in every tier.
                let workers: Vec<WorkerState> = (0..next(170))
                    .map(|id| {
                        let mut worker = WorkerState {
                            worker: WorkerId::new(id),
                            cached: TierOverlap::default(),
                            in_flight: 0,
                            load: WorkerLoad {
                                active_requests: next(50) as u32,
                                active_prefill_tokens: next(3) * next(30_000),
                                active_decode_blocks: next(600),
                                expected_output_tokens: 0,
                                kv_capacity_blocks: [None, Some(300)][next(2) as usize],
                            },
                        };
                        if next(4) != 0 {
                            worker.in_flight = next(45) as u32;
                            worker.cached.device = next(45) as u32;
                            worker.cached.host = next(3) as u32;
                            worker.cached.disk = next(2) as u32;
                            worker.cached.remote = next(2) as u32;
                        }
                        worker
                    })
                    .collect();
                let mut costs = Costs::new();
                policy.fill(&request, &workers, &mut costs);
                assert_eq!(costs.len(), workers.len());
                for (worker, cost) in workers.iter().zip(costs) {
                    let expected = policy.cost(&request, worker);
                    assert_eq!(cost.to_bits(), expected.to_bits(), "{worker:?}");
                }
            }
        }
    }
}
