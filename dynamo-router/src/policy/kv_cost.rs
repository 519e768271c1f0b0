//! The incumbent's KV-aware cost, our baseline.

use super::choose::{SharedRng, lowest_cost};
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
        let load = &worker.load;
        let queued = (load.active_prefill_tokens + request.prompt_tokens) as f64 / block_size;
        let prefill = (queued - self.config.credits.credit(&worker.cached)).max(0.0);
        let decode = worker.decode_blocks_with(request) as f64;
        self.config.prefill_scale * prefill
            + decode
            + self.config.request_weight * f64::from(load.active_requests)
    }
}

impl Default for KvCost {
    fn default() -> Self {
        KvCost::new(KvCostConfig::default())
    }
}

impl Router for KvCost {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        lowest_cost(
            workers,
            |w| self.cost(request, w),
            self.config.temperature,
            &self.rng,
        )
    }
}
