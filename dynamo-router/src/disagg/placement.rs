//! Conditional disaggregation: for each request, whether its prompt is computed by a prefill
//! worker and handed over (remote), or by the decode worker itself (local).

use dynamo_core::BlockSize;

use super::router_cost::Candidates;
use crate::load::WorkerLoad;
use crate::policy::PrefillTimeModel;

/// Where a request's prompt is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// On the prefill worker, whose KV blocks are then handed to the decode worker.
    Remote,
    /// On the decode worker, as in aggregated serving.
    Local,
    /// The whole request on the prefill worker, which computes the prompt and decodes it as
    /// an aggregated worker would: a flexible-role pool, for a prefill worker that is free
    /// when splitting does not pay. Only [`ExpectedTtftPlacement`] with
    /// [`prefill_workers_decode`](ExpectedTtftPlacement::prefill_workers_decode) chooses it;
    /// a policy that does not asks for a prefill worker that only prefills.
    PrefillWorker,
}

/// The prefill worker a request would go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillCandidate {
    /// Prompt tokens it would compute (past its cached prefix).
    pub uncached_tokens: u64,
    /// Its booked load, before this request.
    pub load: WorkerLoad,
}

/// What a [`PlacementPolicy`] knows of one request and the two workers it could use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementContext {
    /// The prompt's length in tokens.
    pub prompt_tokens: u64,
    /// The block size of both pools.
    pub block_size: BlockSize,
    /// Prompt tokens the decode worker would compute itself (past its cached prefix).
    pub decode_uncached_tokens: u64,
    /// The decode worker's booked load, before this request.
    pub decode_load: WorkerLoad,
    /// The prefill worker the request would use; `None` when no prefill worker can take it
    /// now (none registered, or all above their busy thresholds).
    pub prefill: Option<PrefillCandidate>,
    /// Both candidates as their routers saw them, for a placement that weighs them with a
    /// router's cost ([`RouterCostPlacement`](super::RouterCostPlacement)); `None` when the
    /// caller does not give them.
    pub candidates: Option<Candidates>,
}

/// A worker booked for the request being placed, as its selector reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookedWorker {
    /// The leading prompt blocks it caches, in every tier.
    pub cached_blocks: u32,
    /// Its booked load, this request's booking included.
    pub load: WorkerLoad,
}

impl PlacementContext {
    /// The context of a request of `prompt_tokens` whose `decode` worker (and `prefill`
    /// candidate, if any) are booked already: each worker's uncached tokens, from its cached
    /// blocks, and its load without this request's own booking.
    pub fn from_booked(
        prompt_tokens: u64,
        block_size: BlockSize,
        decode: BookedWorker,
        prefill: Option<BookedWorker>,
    ) -> Self {
        let uncached = |worker: &BookedWorker| {
            let cached = u64::from(worker.cached_blocks) * u64::from(block_size.get());
            prompt_tokens.saturating_sub(cached)
        };
        let before = |worker: &BookedWorker, uncached: u64| WorkerLoad {
            active_requests: worker.load.active_requests.saturating_sub(1),
            active_prefill_tokens: worker.load.active_prefill_tokens.saturating_sub(uncached),
            ..worker.load
        };
        let decode_uncached = uncached(&decode);
        PlacementContext {
            prompt_tokens,
            block_size,
            decode_uncached_tokens: decode_uncached,
            decode_load: before(&decode, decode_uncached),
            prefill: prefill.map(|prefill| {
                let uncached_tokens = uncached(&prefill);
                PrefillCandidate {
                    uncached_tokens,
                    load: before(&prefill, uncached_tokens),
                }
            }),
            candidates: None,
        }
    }

    /// The same context with both candidates' states, for
    /// [`RouterCostPlacement`](super::RouterCostPlacement).
    pub fn with_candidates(self, candidates: Candidates) -> Self {
        PlacementContext {
            candidates: Some(candidates),
            ..self
        }
    }

    /// The share of the prompt the decode worker would compute, in `[0, 1]`.
    pub fn decode_uncached_ratio(&self) -> f64 {
        if self.prompt_tokens == 0 {
            return 0.0;
        }
        self.decode_uncached_tokens as f64 / self.prompt_tokens as f64
    }

    /// The prompt's full blocks: what a hand-over moves.
    pub fn full_blocks(&self) -> u64 {
        self.prompt_tokens / u64::from(self.block_size.get())
    }
}

/// Decides, per request, between remote and local prefill. A pure decision, like
/// [`Router`](crate::Router): the disaggregated service falls back to local prefill on its
/// own when there is no prefill candidate or the remote prefill fails.
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_router::disagg::{Placement, PlacementContext, PlacementPolicy, PrefillCandidate, Threshold};
/// use dynamo_router::WorkerLoad;
///
/// let policy = Threshold::default();
/// let mut request = PlacementContext {
///     prompt_tokens: 4000,
///     block_size: BlockSize::new(16)?,
///     decode_uncached_tokens: 4000,
///     decode_load: WorkerLoad::default(),
///     prefill: Some(PrefillCandidate { uncached_tokens: 4000, load: WorkerLoad::default() }),
///     candidates: None,
/// };
/// assert_eq!(policy.place(&request), Placement::Remote);
/// // The decode worker already holds all but the last 100 tokens: computing them there is cheaper.
/// request.decode_uncached_tokens = 100;
/// assert_eq!(policy.place(&request), Placement::Local);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
pub trait PlacementPolicy: std::fmt::Debug + Send + Sync + 'static {
    /// Where `request`'s prompt is computed. Only asked when there is a prefill candidate.
    fn place(&self, request: &PlacementContext) -> Placement;

    /// Whether the policy may give a prefill worker whole requests
    /// ([`Placement::PrefillWorker`]), which it then decodes: the prefill pool's router should
    /// count their decode blocks. Default `false`.
    fn prefill_workers_decode(&self) -> bool {
        false
    }

    /// Whether the worker that computes a prompt (the prefill worker, or the decode worker for
    /// [`Placement::Local`]) should pull the longest prefix of it that any worker of either
    /// pool caches, when that is longer than its own, and compute only the rest. Only the
    /// replay (`dynamo-mocker`) moves such a prefix today; [`DisaggRouter`](super::DisaggRouter)
    /// does not. Default `false`.
    fn pulls_prefix(&self) -> bool {
        false
    }
}

/// Every prompt on a prefill worker when one can take it: NVIDIA Dynamo's disaggregated
/// serving without conditional disaggregation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlwaysRemote;

impl PlacementPolicy for AlwaysRemote {
    fn place(&self, _request: &PlacementContext) -> Placement {
        Placement::Remote
    }
}

/// NVIDIA Dynamo's conditional disaggregation rule: compute the prompt on the decode worker
/// when what it would compute is short, or a small share of the prompt (it caches the rest),
/// or when the prefill worker is above its queue threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// Local when the decode worker would compute at most this many tokens. Default 1000
    /// (Dynamo's `max_local_prefill_length`).
    pub max_local_prefill_tokens: u64,
    /// Local when the decode worker would compute at most this share of the prompt. Default
    /// 0.1.
    pub max_local_uncached_ratio: f64,
    /// Local when the prefill worker has this many prompts queued or running. Default 2
    /// (Dynamo's `max_prefill_queue_size`).
    pub max_prefill_queue: u32,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            max_local_prefill_tokens: 1000,
            max_local_uncached_ratio: 0.1,
            max_prefill_queue: 2,
        }
    }
}

impl PlacementPolicy for Threshold {
    fn place(&self, request: &PlacementContext) -> Placement {
        let short = request.decode_uncached_tokens <= self.max_local_prefill_tokens;
        let mostly_cached = request.decode_uncached_ratio() <= self.max_local_uncached_ratio;
        let queued = request
            .prefill
            .is_none_or(|p| p.load.active_requests >= self.max_prefill_queue);
        if short || mostly_cached || queued {
            Placement::Local
        } else {
            Placement::Remote
        }
    }
}

/// Our rule: compare the expected time to first token of both placements, charge each for
/// the prefill work it adds to its worker (as the router's expected-TTFT cost does), and
/// charge local prefill for the decode steps it stalls.
///
/// - Remote: the prefill worker's queued prompt tokens and this prompt's uncached part, at
///   [`prefill`](Self::prefill) speed (the uncached part weighted by 1 +
///   [`compute_weight`](Self::compute_weight)), plus the hand-over of the prompt's full blocks
///   ([`transfer_ms_per_block`](Self::transfer_ms_per_block) each, plus
///   [`transfer_latency_ms`](Self::transfer_latency_ms)).
/// - Local: the decode worker's queued prompt tokens and its uncached part (weighted so), plus
///   [`stall_weight`](Self::stall_weight) × the prefill time × the requests decoding there,
///   since each waits for those steps.
/// - With [`prefill_workers_decode`](Self::prefill_workers_decode), also the whole request on
///   an idle prefill worker: its uncached part alone (weighted so).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpectedTtftPlacement {
    /// The engines' prefill speed.
    pub prefill: PrefillTimeModel,
    /// Milliseconds to move one block from the prefill to the decode worker. Default 0.05
    /// (a 2 MiB block at 40 GB/s).
    pub transfer_ms_per_block: f64,
    /// Fixed cost of a hand-over, ms. Default 1.0.
    pub transfer_latency_ms: f64,
    /// How much a millisecond of stall for one running decode counts against a millisecond of
    /// this request's TTFT. Default 0.15: in the replay (`docs/disaggregation.md`) it keeps
    /// the p90 TTFT of 0.05 within 1% and lowers the mean time per output token by 5–6% on
    /// long prompts; much above it, the decode worker stops taking prompts it caches.
    pub stall_weight: f64,
    /// How much the prefill time a placement adds to its worker counts, on top of this
    /// request's own TTFT: every request placed after it there waits for it, so a worker that
    /// caches more of the prompt is preferred by more than the TTFT difference. Default 1.0,
    /// as the router's [`ExpectedTtftConfig::compute_weight`](crate::ExpectedTtftConfig).
    pub compute_weight: f64,
    /// A flexible-role prefill pool: a prefill worker with nothing booked serves a whole
    /// request ([`Placement::PrefillWorker`]) when its expected TTFT is no worse than the
    /// decode worker's; a busy one is charged, like a decode worker, for the requests it may
    /// be decoding. Default `false`: prefill workers only prefill.
    pub prefill_workers_decode: bool,
}

impl Default for ExpectedTtftPlacement {
    fn default() -> Self {
        ExpectedTtftPlacement {
            prefill: PrefillTimeModel::default(),
            transfer_ms_per_block: 0.05,
            transfer_latency_ms: 1.0,
            stall_weight: 0.15,
            compute_weight: 1.0,
            prefill_workers_decode: false,
        }
    }
}

impl ExpectedTtftPlacement {
    /// The cost of remote prefill, ms: its expected TTFT, plus the weighted prefill work it
    /// adds to the prefill worker; `None` without a prefill candidate.
    pub fn remote_ms(&self, request: &PlacementContext) -> Option<f64> {
        let prefill = request.prefill?;
        let queued = self.prefill.time_ms(prefill.load.active_prefill_tokens);
        let own = self.work_ms(prefill.uncached_tokens);
        let transfer =
            self.transfer_latency_ms + self.transfer_ms_per_block * request.full_blocks() as f64;
        // The decode worker computes the tail past the last full block (and the first token).
        let tail = request.prompt_tokens % u64::from(request.block_size.get()) + 1;
        Some(queued + own + transfer + self.prefill.time_ms(tail))
    }

    /// The cost of local prefill, ms: its expected TTFT, plus the weighted prefill work it adds
    /// to the decode worker and the weighted stall of the decode worker's running requests.
    pub fn local_ms(&self, request: &PlacementContext) -> f64 {
        let queued = self
            .prefill
            .time_ms(request.decode_load.active_prefill_tokens);
        let own = self.prefill.time_ms(request.decode_uncached_tokens);
        let stall = self.stall_weight * own * f64::from(request.decode_load.active_requests);
        queued + own * (1.0 + self.compute_weight) + stall
    }

    /// The prefill time of `tokens`, plus [`compute_weight`](Self::compute_weight) × it for
    /// the requests it delays after it on the same worker.
    fn work_ms(&self, tokens: u64) -> f64 {
        self.prefill.time_ms(tokens) * (1.0 + self.compute_weight)
    }
}

impl PlacementPolicy for ExpectedTtftPlacement {
    fn place(&self, request: &PlacementContext) -> Placement {
        let Some((mut remote, prefill)) = self.remote_ms(request).zip(request.prefill) else {
            return Placement::Local;
        };
        let local = self.local_ms(request);
        if self.prefill_workers_decode {
            if prefill.load.active_requests == 0 {
                // The whole request on an idle prefill worker is the remote placement without
                // the hand-over and the tail: it wins over remote, and over local when no
                // dearer (the decode worker's steps stay free for the requests handed to it).
                let whole = self.work_ms(prefill.uncached_tokens);
                return if whole <= local {
                    Placement::PrefillWorker
                } else {
                    Placement::Local
                };
            }
            // The prefill worker may be decoding whole requests: a prompt there stalls them.
            let own = self.prefill.time_ms(prefill.uncached_tokens);
            remote += self.stall_weight * own * f64::from(prefill.load.active_requests);
        }
        if remote < local {
            Placement::Remote
        } else {
            Placement::Local
        }
    }

    fn prefill_workers_decode(&self) -> bool {
        self.prefill_workers_decode
    }
}

impl<P: PlacementPolicy + ?Sized> PlacementPolicy for std::sync::Arc<P> {
    fn place(&self, request: &PlacementContext) -> Placement {
        (**self).place(request)
    }

    fn prefill_workers_decode(&self) -> bool {
        (**self).prefill_workers_decode()
    }

    fn pulls_prefix(&self) -> bool {
        (**self).pulls_prefix()
    }
}

impl<P: PlacementPolicy + ?Sized> PlacementPolicy for Box<P> {
    fn place(&self, request: &PlacementContext) -> Placement {
        (**self).place(request)
    }

    fn prefill_workers_decode(&self) -> bool {
        (**self).prefill_workers_decode()
    }

    fn pulls_prefix(&self) -> bool {
        (**self).pulls_prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: u64, decode_uncached: u64, prefill_queue: u32) -> PlacementContext {
        PlacementContext {
            prompt_tokens: prompt,
            block_size: BlockSize::new(16).expect("16 is a block size"),
            decode_uncached_tokens: decode_uncached,
            decode_load: WorkerLoad::default(),
            prefill: Some(PrefillCandidate {
                uncached_tokens: prompt,
                load: WorkerLoad {
                    active_requests: prefill_queue,
                    ..WorkerLoad::default()
                },
            }),
            candidates: None,
        }
    }

    #[test]
    fn the_threshold_rule_keeps_short_cached_or_queued_prompts_local() {
        let policy = Threshold::default();
        assert_eq!(policy.place(&request(4000, 4000, 0)), Placement::Remote);
        assert_eq!(policy.place(&request(4000, 900, 0)), Placement::Local);
        assert_eq!(policy.place(&request(40_000, 3000, 0)), Placement::Local);
        assert_eq!(policy.place(&request(4000, 4000, 2)), Placement::Local);
        let mut none = request(4000, 4000, 0);
        none.prefill = None;
        assert_eq!(policy.place(&none), Placement::Local);
    }

    #[test]
    fn expected_ttft_sends_long_prompts_away_from_a_busy_decode_worker() {
        let policy = ExpectedTtftPlacement::default();
        let mut busy = request(8000, 8000, 0);
        busy.decode_load.active_requests = 64;
        assert_eq!(policy.place(&busy), Placement::Remote);
        // A prompt the decode worker caches but for its tail stays there.
        let mut cached = request(8000, 20, 0);
        cached.decode_load.active_requests = 64;
        assert_eq!(policy.place(&cached), Placement::Local);
        // An idle decode worker and a prefill worker with a long queue: local.
        let mut queued = request(2000, 2000, 0);
        if let Some(prefill) = &mut queued.prefill {
            prefill.load.active_prefill_tokens = 50_000;
        }
        assert_eq!(policy.place(&queued), Placement::Local);
    }

    #[test]
    fn a_flexible_prefill_pool_serves_whole_requests_only_on_idle_workers() {
        let policy = ExpectedTtftPlacement {
            prefill_workers_decode: true,
            ..ExpectedTtftPlacement::default()
        };
        // Both idle and uncached: the prefill worker takes the whole request.
        assert_eq!(
            policy.place(&request(4000, 4000, 0)),
            Placement::PrefillWorker
        );
        // The decode worker caches most of the prompt: local.
        assert_eq!(policy.place(&request(4000, 100, 0)), Placement::Local);
        // A prefill worker with a prompt booked prefills only, when that pays.
        let mut busy = request(8000, 8000, 1);
        busy.decode_load.active_requests = 64;
        assert_eq!(policy.place(&busy), Placement::Remote);
        // Without the flexible pool, an idle prefill worker only prefills.
        let plain = ExpectedTtftPlacement::default();
        assert_ne!(
            plain.place(&request(4000, 4000, 0)),
            Placement::PrefillWorker
        );
    }
}
