//! Our policy: route to the worker that will produce the first token soonest.

use smallvec::{SmallVec, smallvec};

use super::batch::BATCH;
use super::choose::{SharedRng, lowest_of};
use super::kv_cost::TierCredits;
use super::request_costs::RequestCosts;
use super::{Decision, RouteContext, Router, WorkerState};

/// How long an engine takes to prefill a number of tokens, in milliseconds.
///
/// The engine prefills in chunks of at most `chunk_tokens` per step, and a step of `n` tokens
/// takes `a·n² + b·n + c` ms. The defaults are the public timing model of NVIDIA Dynamo's
/// simulated vLLM worker (8192-token steps); fit `a`, `b`, `c` to your engine's profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefillTimeModel {
    /// Quadratic term, ms per token².
    pub a: f64,
    /// Linear term, ms per token.
    pub b: f64,
    /// Fixed cost of a step, ms.
    pub c: f64,
    /// The most tokens one step prefills.
    pub chunk_tokens: u64,
}

impl Default for PrefillTimeModel {
    fn default() -> Self {
        PrefillTimeModel {
            a: 4.209989e-7,
            b: 1.518344e-2,
            c: 16.50142,
            chunk_tokens: 8192,
        }
    }
}

impl PrefillTimeModel {
    /// The time to prefill `tokens`, in whole chunks and a remainder.
    pub fn time_ms(&self, tokens: u64) -> f64 {
        let step = |n: u64| self.step_ms(n);
        let chunk = self.chunk_tokens.max(1);
        if tokens < chunk {
            // One partial chunk, without the divisions (the same sum as below).
            return if tokens > 0 { step(tokens) } else { 0.0 };
        }
        let (full, rest) = self.chunks(tokens, chunk);
        full as f64 * step(chunk) + if rest > 0 { step(rest) } else { 0.0 }
    }

    /// The time of one step of `n` tokens.
    #[inline]
    pub(super) fn step_ms(&self, n: u64) -> f64 {
        let n = n as f64;
        self.a * n * n + self.b * n + self.c
    }

    /// `tokens` in whole chunks of `chunk` and a remainder.
    #[inline]
    pub(super) fn chunks(&self, tokens: u64, chunk: u64) -> (u64, u64) {
        if chunk.is_power_of_two() {
            // The usual chunk sizes: a shift and a mask instead of a division.
            (tokens >> chunk.trailing_zeros(), tokens & (chunk - 1))
        } else {
            (tokens / chunk, tokens % chunk)
        }
    }
}

/// The settings of [`ExpectedTtft`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpectedTtftConfig {
    /// The engine's prefill speed.
    pub prefill: PrefillTimeModel,
    /// The credit of a cached block per tier (lower tiers must be brought back first).
    pub credits: TierCredits,
    /// The weight of the prefill time this request adds to the worker, which delays every
    /// request that comes after it there. Default 1.0.
    pub compute_weight: f64,
    /// The weight of the stall this request's prefill causes each request already active on
    /// the worker: an engine with chunked prefill runs the prompt in the same steps as their
    /// decodes, so each of them waits the prompt's prefill time for a token (the router does
    /// not know which of them still wait for their own prefill, so all count). Without it, a
    /// worker that holds a hot prefix draws every request that shares it until its batch is
    /// full, since computing the prefix elsewhere costs more than any one of them. The charge
    /// is capped at what the whole prompt costs on an idle worker. Default 0.5
    /// (chosen with `dynamo-replay` over generated workloads, `docs/router.md`).
    pub stall_weight: f64,
    /// The cost, in ms, of each KV block the worker's active requests hold (and this request
    /// would add): decode pressure, which slows every step and fills the cache. Default 0.1.
    pub decode_ms_per_block: f64,
    /// The KV blocks a worker holds, for a worker whose own capacity the router's load view
    /// does not know ([`WorkerLoad::kv_capacity_blocks`](crate::WorkerLoad::kv_capacity_blocks),
    /// which a live frontend sets from its workers' load reports). A request whose blocks,
    /// with those of the worker's active requests, would not fit waits there for memory (or
    /// is preempted), so each block past the capacity costs
    /// [`overflow_ms_per_block`](Self::overflow_ms_per_block). Default `None`: a worker that
    /// reported no capacity is not charged.
    pub kv_capacity_blocks: Option<u64>,
    /// The cost, in ms, of each block past [`kv_capacity_blocks`](Self::kv_capacity_blocks).
    /// Default 10.
    pub overflow_ms_per_block: f64,
    /// How long, in ms, a request waits for memory on a worker whose memory is full, given
    /// [`kv_capacity_blocks`](Self::kv_capacity_blocks): it is charged this times the chance
    /// of finding the memory taken, `u^(capacity / (2 · prompt blocks))` at the worker's
    /// booked share `u` of its capacity (this request's blocks included). A request that needs
    /// a large share of a worker's memory finds it taken long before the worker is full; one
    /// that needs a sliver, only when it is nearly full. Default 20,000 (a few request
    /// lifetimes of ~200 output tokens at ~35 ms a step; chosen with `dynamo-replay` on long
    /// conversations in small caches, `docs/router.md`).
    pub memory_wait_ms: f64,
    /// 0.0 (the default) picks the lowest cost; above 0, a softmax sample at this temperature.
    pub temperature: f64,
    /// A seed for reproducible tie-breaks and samples; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for ExpectedTtftConfig {
    fn default() -> Self {
        ExpectedTtftConfig {
            prefill: PrefillTimeModel::default(),
            credits: TierCredits::default(),
            compute_weight: 1.0,
            stall_weight: 0.5,
            decode_ms_per_block: 0.1,
            kv_capacity_blocks: None,
            overflow_ms_per_block: 10.0,
            memory_wait_ms: 20_000.0,
            temperature: 0.0,
            seed: None,
        }
    }
}

/// Routes each request to the worker with the lowest expected time to first token.
///
/// Three changes to the incumbent's cost ([`KvCost`](crate::KvCost)), each aimed at one of its
/// blind spots:
///
/// 1. **Prefixes in flight count as cached.** When a burst of requests shares a new prefix,
///    the engine's `Stored` events arrive only after the first request's prefill; until then
///    the incumbent sees no overlap anywhere and scatters the burst, computing the prefix once
///    per worker. Here the prompt blocks that requests active on a worker hold
///    ([`WorkerState::in_flight`]) are credited like cached ones, so the burst follows the
///    first request, until that worker's queue makes another one faster.
/// 2. **Time, not blocks.** The incumbent adds prefill blocks and decode blocks as if they cost
///    the same. Here the cost is the request's expected time to first token (the time to
///    prefill the worker's queued prompt work plus this request's uncached part, from the
///    engine's [`PrefillTimeModel`], per-step overhead and the quadratic attention term
///    included), plus the prefill time it takes from the requests that will queue behind it,
///    plus a smaller decode-pressure term per held block. A long uncached prompt then weighs
///    what it will really cost, and recomputing a prefix that another worker is already
///    computing is charged for the work it duplicates.
/// 3. **Stalled decodes.** With chunked prefill a prompt runs in the same steps as the
///    worker's decoding requests, and each of them waits its prefill time for a token. That
///    stall, [`ExpectedTtftConfig::stall_weight`] times the prefill time per request active on
///    the worker, keeps a worker that holds a hot prefix from drawing every request that
///    shares it: computing the prefix on another worker costs more than any one request's
///    wait there, but not more than the stalls of a growing batch. The charge stops at what
///    the whole prompt costs on an idle worker, so that on a busy pool the queue decides.
///
/// Given a worker's KV capacity (its own, [`WorkerLoad::kv_capacity_blocks`](crate::WorkerLoad),
/// else [`ExpectedTtftConfig::kv_capacity_blocks`]), the blocks a request would hold past it
/// are charged too: there it waits for memory however short its
/// prefill, which the time model does not see. So is the chance of waiting for memory before
/// the booked blocks reach the capacity ([`ExpectedTtftConfig::memory_wait_ms`]), which grows
/// with the worker's booked share of its memory, and the sooner the larger the prompt: long
/// conversations on small caches then spread before their workers' memory is full, where
/// each would otherwise stay on the worker that caches it and wait there.
///
/// On the Mooncake trace replayed through 8 simulated workers (`docs/simulator.md`), it
/// reaches a prefix-cache reuse of 0.540 and a p90 TTFT of 519 ms, against 0.503 and 546 ms
/// for [`KvCost`](crate::KvCost) in the same replay; `docs/router.md` ("Routing quality") has
/// 4 and 16 workers and generated workloads of other shapes.
///
/// ```text
/// cached   = max(device + 0.75·host + 0.25·disk, in_flight)            (blocks)
/// uncached = max(0, prompt_tokens − cached · block_size)               (tokens)
/// cost     = prefill_ms(active_prefill_tokens + uncached)              (expected TTFT)
///          + compute_weight · prefill_ms(uncached)                     (work added)
///          + min(stall_weight · active_requests · prefill_ms(uncached),
///                (1 + compute_weight) · prefill_ms(prompt_tokens))     (requests stalled)
///          + decode_ms_per_block · held                                (decode pressure)
///          + overflow_ms_per_block · max(0, held − capacity)           (memory, if known)
///          + memory_wait_ms · min(1, held / capacity)^n                (memory, if known)
/// held     = active_decode_blocks + new blocks
/// capacity = the worker's kv_capacity_blocks, else the configured one
/// n        = round(capacity / (2 · prompt blocks)), 1 to 4095
/// ```
///
/// ```
/// use dynamo_core::{BlockSize, SequenceHash, WorkerId};
/// use dynamo_router::{Decision, ExpectedTtft, RouteContext, Router, WorkerState};
///
/// let blocks: Vec<_> = (0..8).map(SequenceHash).collect();
/// let request = RouteContext {
///     blocks: &blocks,
///     prompt_tokens: 512,
///     block_size: BlockSize::new(64)?,
///     expected_output_tokens: None,
/// };
/// let mut busy = WorkerState {
///     worker: WorkerId::new(1),
///     cached: Default::default(),
///     in_flight: 8, // an active request is computing this very prefix
///     load: Default::default(),
/// };
/// busy.load.active_requests = 1;
/// busy.load.active_prefill_tokens = 512; // ... and has not finished it yet
/// busy.load.active_decode_blocks = 9;
/// let idle = WorkerState { worker: WorkerId::new(2), in_flight: 0, load: Default::default(), ..busy };
/// // The burst follows the prefix that is still being computed.
/// assert_eq!(ExpectedTtft::default().route(&request, &[busy, idle]), Decision::Route(WorkerId::new(1)));
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug)]
pub struct ExpectedTtft {
    config: ExpectedTtftConfig,
    rng: SharedRng,
}

impl ExpectedTtft {
    /// The policy with these settings.
    pub fn new(config: ExpectedTtftConfig) -> Self {
        ExpectedTtft {
            rng: SharedRng::new(config.seed),
            config,
        }
    }

    /// The expected time to first token of `request` on `worker`, in ms.
    pub fn expected_ttft_ms(&self, request: &RouteContext<'_>, worker: &WorkerState) -> f64 {
        RequestCosts::new(&self.config, request).ttft_ms(worker)
    }

    /// The cost of sending `request` to `worker`, in ms: expected time to first token, the
    /// prefill work added, the stalls of the worker's active requests, and decode pressure.
    pub fn cost(&self, request: &RouteContext<'_>, worker: &WorkerState) -> f64 {
        RequestCosts::new(&self.config, request).cost(worker)
    }
}

impl Default for ExpectedTtft {
    fn default() -> Self {
        ExpectedTtft::new(ExpectedTtftConfig::default())
    }
}

impl Router for ExpectedTtft {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        // What does not depend on the worker is computed once.
        let mut costs: SmallVec<[f64; BATCH]> = smallvec![0.0; workers.len()];
        RequestCosts::new(&self.config, request).fill(workers, &mut costs);
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

    #[test]
    fn prefill_time_is_charged_per_chunk() {
        let model = PrefillTimeModel::default();
        assert_eq!(model.time_ms(0), 0.0);
        let one_step = model.time_ms(8192);
        assert!(
            (one_step - (4.209989e-7 * 8192.0 * 8192.0 + 1.518344e-2 * 8192.0 + 16.50142)).abs()
                < 1e-9
        );
        assert!((model.time_ms(16384) - 2.0 * one_step).abs() < 1e-9);
        assert!(model.time_ms(8193) > one_step + model.c);
    }

    /// A request of `blocks` full 64-token blocks sharing nothing, and an idle worker `id`.
    fn request_and_worker(
        blocks: &[dynamo_core::SequenceHash],
        id: u64,
    ) -> (RouteContext<'_>, WorkerState) {
        let request = RouteContext {
            blocks,
            prompt_tokens: blocks.len() as u64 * 64,
            block_size: dynamo_core::BlockSize::new(64).expect("valid"),
            expected_output_tokens: None,
        };
        let worker = WorkerState {
            worker: dynamo_core::WorkerId::new(id),
            cached: Default::default(),
            in_flight: 0,
            load: Default::default(),
        };
        (request, worker)
    }

    /// A worker that caches a hot 8k-token system prompt and is decoding `decoding` requests,
    /// and an idle worker that caches nothing, for a prompt of that prefix and 1k tokens more.
    fn hot_prefix_choice(policy: &ExpectedTtft, decoding: u32) -> Decision {
        let blocks: Vec<_> = (0..144).map(dynamo_core::SequenceHash).collect();
        let (request, idle) = request_and_worker(&blocks, 2);
        let mut hot = WorkerState {
            worker: dynamo_core::WorkerId::new(1),
            ..idle
        };
        hot.cached.device = 128;
        hot.load.active_requests = decoding;
        hot.load.active_decode_blocks = 128 + 20 * u64::from(decoding);
        policy.route(&request, &[hot, idle])
    }

    #[test]
    fn a_hot_prefix_draws_requests_until_their_stalls_outweigh_it() {
        let ours = ExpectedTtft::default();
        let hot = Decision::Route(dynamo_core::WorkerId::new(1));
        let idle = Decision::Route(dynamo_core::WorkerId::new(2));
        assert_eq!(hot_prefix_choice(&ours, 4), hot);
        assert_eq!(hot_prefix_choice(&ours, 100), idle);
        // Without the stall term, the hot worker's batch would keep growing.
        let herding = ExpectedTtft::new(ExpectedTtftConfig {
            stall_weight: 0.0,
            ..ExpectedTtftConfig::default()
        });
        assert_eq!(hot_prefix_choice(&herding, 100), hot);
    }

    #[test]
    fn on_a_busy_pool_the_queue_decides_not_the_stall() {
        // A 20k-token prompt that no worker caches. Worker 1 decodes 40 requests and has no
        // prefill queue; worker 2 decodes 2 long ones and has 60k tokens queued. Charged in
        // full, 40 stalls would send the prompt behind the queue; capped, it goes where it
        // starts at once.
        let blocks: Vec<_> = (0..320).map(dynamo_core::SequenceHash).collect();
        let (request, mut many) = request_and_worker(&blocks, 1);
        many.load.active_requests = 40;
        many.load.active_decode_blocks = 40 * 40;
        let (_, mut queued) = request_and_worker(&blocks, 2);
        queued.load.active_requests = 2;
        queued.load.active_prefill_tokens = 60_000;
        queued.load.active_decode_blocks = 1000;
        let ours = ExpectedTtft::default();
        assert_eq!(
            ours.route(&request, &[many, queued]),
            Decision::Route(dynamo_core::WorkerId::new(1))
        );
        let cap = 2.0 * ours.config.prefill.time_ms(request.prompt_tokens);
        let queue = ours.config.prefill.time_ms(request.prompt_tokens);
        let expected = queue + queue + cap + 0.1 * (1600 + 320 + 1) as f64;
        assert!((ours.cost(&request, &many) - expected).abs() < 1e-6);
    }

    /// A prompt of `blocks` full blocks, cached on worker 1 whose 3 requests hold 2,800
    /// blocks of its 4,096, and worker 2, whose 3 requests hold 2,000 and which caches none.
    fn mostly_booked_choice(policy: &ExpectedTtft, blocks: u64) -> Decision {
        let blocks: Vec<_> = (0..blocks).map(dynamo_core::SequenceHash).collect();
        let (request, mut other) = request_and_worker(&blocks, 2);
        other.load.active_requests = 3;
        other.load.active_decode_blocks = 2000;
        let mut booked = WorkerState {
            worker: dynamo_core::WorkerId::new(1),
            ..other
        };
        booked.cached.device = blocks.len() as u32;
        booked.load.active_decode_blocks = 2800;
        policy.route(&request, &[booked, other])
    }

    #[test]
    fn a_long_prompt_leaves_a_worker_whose_memory_is_mostly_booked() {
        let knowing = ExpectedTtft::new(ExpectedTtftConfig {
            kv_capacity_blocks: Some(4096),
            ..ExpectedTtftConfig::default()
        });
        let booked = Decision::Route(dynamo_core::WorkerId::new(1));
        let other = Decision::Route(dynamo_core::WorkerId::new(2));
        // 1,000 blocks fit beside the 2,800 booked (no overflow), but with 93% of the memory
        // booked a prompt of a quarter of it likely waits there: it is recomputed on the
        // worker with more room (73% booked with it).
        assert_eq!(mostly_booked_choice(&knowing, 1000), other);
        // A prompt of 100 blocks waits only when the memory is nearly full: it stays with its
        // cache.
        assert_eq!(mostly_booked_choice(&knowing, 100), booked);
        // Without the memory wait, the long one stays where it is cached, and waits there.
        let overflow_only = ExpectedTtft::new(ExpectedTtftConfig {
            memory_wait_ms: 0.0,
            ..knowing.config
        });
        assert_eq!(mostly_booked_choice(&overflow_only, 1000), booked);
    }

    #[test]
    fn a_worker_whose_memory_is_full_is_charged_when_its_capacity_is_known() {
        // Worker 1 caches the whole 64-block conversation but holds 1,000 of its 1,024 blocks;
        // worker 2 caches nothing and holds nothing.
        let blocks: Vec<_> = (0..64).map(dynamo_core::SequenceHash).collect();
        let (request, mut full) = request_and_worker(&blocks, 1);
        full.cached.device = 64;
        full.load.active_requests = 3;
        full.load.active_decode_blocks = 1000;
        let (_, empty) = request_and_worker(&blocks, 2);
        let blind = ExpectedTtft::default();
        assert_eq!(
            blind.route(&request, &[full, empty]),
            Decision::Route(dynamo_core::WorkerId::new(1))
        );
        let knowing = ExpectedTtft::new(ExpectedTtftConfig {
            kv_capacity_blocks: Some(1024),
            ..ExpectedTtftConfig::default()
        });
        assert_eq!(
            knowing.route(&request, &[full, empty]),
            Decision::Route(dynamo_core::WorkerId::new(2))
        );
    }

    #[test]
    fn each_worker_is_charged_against_the_capacity_it_reported() {
        // Both workers hold 1,000 blocks for 3 requests; worker 1 caches the 64-block prompt.
        let blocks: Vec<_> = (0..64).map(dynamo_core::SequenceHash).collect();
        let (request, mut small) = request_and_worker(&blocks, 1);
        small.cached.device = 64;
        small.load.active_requests = 3;
        small.load.active_decode_blocks = 1000;
        let (_, mut large) = request_and_worker(&blocks, 2);
        large.load.active_requests = 3;
        large.load.active_decode_blocks = 1000;
        let (to_small, to_large) = (
            Decision::Route(dynamo_core::WorkerId::new(1)),
            Decision::Route(dynamo_core::WorkerId::new(2)),
        );
        // No capacity known anywhere: the memory terms are off and the cache decides.
        let blind = ExpectedTtft::default();
        assert_eq!(blind.route(&request, &[small, large]), to_small);
        // Worker 1 reports 1,024 blocks (nearly full), worker 2 16,384: the prompt leaves
        // the small worker, with no capacity configured.
        small.load.kv_capacity_blocks = Some(1024);
        large.load.kv_capacity_blocks = Some(16_384);
        assert_eq!(blind.route(&request, &[small, large]), to_large);
        // A worker's own capacity is read before the configured one...
        let configured_large = ExpectedTtft::new(ExpectedTtftConfig {
            kv_capacity_blocks: Some(16_384),
            ..ExpectedTtftConfig::default()
        });
        assert_eq!(configured_large.route(&request, &[small, large]), to_large);
        // ... which stands in for a worker that reported none (0 is none), bit for bit.
        let reported = blind.cost(&request, &large);
        for unknown in [None, Some(0)] {
            let silent = WorkerState {
                load: WorkerLoad {
                    kv_capacity_blocks: unknown,
                    ..large.load
                },
                ..large
            };
            assert_eq!(configured_large.cost(&request, &silent), reported);
        }
        // The small worker silent again: nothing is charged there, the cache decides again.
        small.load.kv_capacity_blocks = None;
        assert_eq!(blind.route(&request, &[small, large]), to_small);
    }
}
