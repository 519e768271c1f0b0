//! The settings of a disaggregated replay: a prefill pool, a decode pool, and the link that
//! carries the KV cache from one to the other.

use dynamo_router::{Decision, KvCost, KvCostConfig, RouteContext, Router, WorkerState};

use crate::engine::HandedOverKv;

/// A replay with separate prefill and decode workers ([`ReplayConfig::disagg`]).
///
/// A request is placed at its arrival by the replay's
/// [`PlacementPolicy`](dynamo_router::disagg::PlacementPolicy)
/// ([`Replay::placement`](crate::Replay::placement)):
///
/// - **Remote** (every request under the default
///   [`AlwaysRemote`](dynamo_router::disagg::AlwaysRemote)): a prefill worker, chosen by the
///   replay's policy over the prefill pool, computes the prompt and samples one token, which
///   nobody sees (as NVIDIA Dynamo's mocker does). When it finishes, a decode worker is chosen
///   by the decode pool's policy and booked; the prompt's KV travels for
///   [`TransferConfig::time_ms`]; then the decode worker holds the whole prompt in its cache
///   and decodes every output token, the first included
///   ([`SimWorker::add_transferred_request`](crate::SimWorker::add_transferred_request));
///   [`handed_over_kv`](Self::handed_over_kv) says whether it keeps the prompt cached after.
/// - **Local**: the decode worker computes the prompt itself, as an aggregated worker does.
/// - **Prefill worker** (a flexible-role pool, with
///   [`ExpectedTtftPlacement::prefill_workers_decode`](dynamo_router::disagg::ExpectedTtftPlacement::prefill_workers_decode)):
///   the prefill worker serves the whole request, as an aggregated worker does; its first
///   token is the request's.
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_mocker::{
///     CacheKnowledge, DisaggConfig, HandedOverKv, Replay, ReplayConfig, TraceRequest,
///     TransferConfig,
/// };
/// use dynamo_router::{KvCost, SharedIndex};
///
/// let trace = vec![
///     TraceRequest { timestamp: 0.0, input_length: 1024, output_length: 8, hash_ids: vec![1, 2] },
///     TraceRequest { timestamp: 500.0, input_length: 1024, output_length: 8, hash_ids: vec![1, 3] },
/// ];
/// // One prefill and two decode workers, over a 50 GB/s link.
/// let config = ReplayConfig {
///     disagg: Some(DisaggConfig {
///         prefill_workers: 1,
///         decode_workers: 2,
///         transfer: TransferConfig { bandwidth_gb_per_s: 50.0, ..TransferConfig::default() },
///         handed_over_kv: HandedOverKv::Discarded,
///     }),
///     ..ReplayConfig::default()
/// };
/// let outcome = Replay::new(&trace, &config)
///     .policy(KvCost::default())
///     .knowledge(CacheKnowledge::Events(SharedIndex::new(BlockSize::new(64)?)))
///     .run()?;
/// let phases = outcome.summary.disagg.expect("a disaggregated replay");
/// assert_eq!(phases.remote_requests, 2);
/// // 1,024 tokens of 128 KiB each at 50 GB/s: 2.7 ms on the link.
/// assert!((phases.transfer.mean_ms - 2.68).abs() < 0.01);
/// // The prefill worker (id 0) found the shared first trace block cached for the second.
/// assert_eq!(outcome.records[1].prefill_worker, Some(0));
/// assert_eq!(outcome.records[1].cached_tokens, 512);
/// // Both decoded on decode workers (ids 1 and 2).
/// assert!(outcome.records.iter().all(|r| r.worker >= 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`ReplayConfig::disagg`]: crate::ReplayConfig::disagg
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisaggConfig {
    /// Prefill workers: ids `0..prefill_workers`.
    pub prefill_workers: usize,
    /// Decode workers: ids `prefill_workers..prefill_workers + decode_workers`.
    pub decode_workers: usize,
    /// The KV hand-over.
    pub transfer: TransferConfig,
    /// Whether a decode worker keeps handed-over prompts in its prefix cache. Default
    /// [`HandedOverKv::Discarded`], as NVIDIA Dynamo's mocker.
    pub handed_over_kv: HandedOverKv,
}

/// How long the hand-over of a prompt's KV takes: a fixed latency, plus the prompt's blocks
/// (the last, partial one included) at the link's bandwidth.
///
/// The default is NVIDIA Dynamo's mocker's: an instant hand-over (its `kv_transfer_bandwidth`
/// is unset unless given).
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_mocker::TransferConfig;
///
/// let block = BlockSize::new(64)?;
/// assert_eq!(TransferConfig::default().time_ms(8000, block), 0.0);
/// // Llama-3-8B in bf16 (128 KiB per token) over a 50 GB/s link, 0.5 ms to set up.
/// let link = TransferConfig { bandwidth_gb_per_s: 50.0, latency_ms: 0.5, kv_bytes_per_token: 131_072 };
/// // 8,000 tokens are 125 blocks of 64 tokens: 1.05 GB, 21 ms.
/// assert!((link.time_ms(8000, block) - 21.47).abs() < 0.01);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferConfig {
    /// The link's bandwidth in GB/s (10⁹ bytes); 0 moves the blocks instantly. Default 0.
    pub bandwidth_gb_per_s: f64,
    /// A fixed cost per hand-over, ms. Default 0.
    pub latency_ms: f64,
    /// KV bytes per token (all layers, keys and values). Default 131,072: Llama-3-8B in bf16.
    pub kv_bytes_per_token: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            bandwidth_gb_per_s: 0.0,
            latency_ms: 0.0,
            kv_bytes_per_token: 131_072,
        }
    }
}

impl TransferConfig {
    /// How long handing over the KV of a prompt of `prompt_tokens` takes, ms.
    pub fn time_ms(&self, prompt_tokens: u64, block_size: dynamo_core::BlockSize) -> f64 {
        let block = u64::from(block_size.get());
        let mut ms = self.latency_ms.max(0.0);
        if self.bandwidth_gb_per_s > 0.0 {
            let bytes = prompt_tokens.div_ceil(block) * block * self.kv_bytes_per_token;
            ms += bytes as f64 / (self.bandwidth_gb_per_s * 1e9) * 1000.0;
        }
        ms
    }
}

/// The decode pool's default policy, NVIDIA Dynamo's decode router: its KV cost without the
/// prefill term (no overlap credit, no queued prompt tokens), so the active blocks alone
/// decide.
pub(crate) fn decode_load_policy(seed: Option<u64>) -> KvCost {
    KvCost::new(KvCostConfig {
        prefill_scale: 0.0,
        seed,
        ..KvCostConfig::default()
    })
}

/// The prefill pool's view of a policy: the workers' active decode blocks left out, as NVIDIA
/// Dynamo's prefill router leaves them out (`router_track_active_blocks = false`). On a prefill
/// worker they are the prompts in its queue, which the prefill term counts already. When the
/// placement gives prefill workers whole requests (`decodes`), they are these requests'
/// decodes too, and the router sees them, as `DisaggRouter`'s prefill pool does.
#[derive(Debug)]
pub(crate) struct PrefillPool<P> {
    pub(crate) policy: P,
    pub(crate) decodes: bool,
}

impl<P: Router> Router for PrefillPool<P> {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        if self.decodes {
            return self.policy.route(request, workers);
        }
        let mut view = workers.to_vec();
        for worker in &mut view {
            worker.load.active_decode_blocks = 0;
        }
        self.policy.route(request, &view)
    }
}

/// The decode pool's router: handed-over requests by the hand-over policy (by default NVIDIA
/// Dynamo's decode cost: they compute nothing there, so the least active blocks decide),
/// candidates for local prefill by the decode policy. The simulation says which is asked
/// through `handing_over`.
#[derive(Debug)]
pub(crate) struct DecodePool {
    pub(crate) local: Box<dyn Router>,
    pub(crate) handoff: Box<dyn Router>,
    pub(crate) handing_over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Router for DecodePool {
    fn route(&self, request: &RouteContext<'_>, workers: &[WorkerState]) -> Decision {
        if self.handing_over.load(std::sync::atomic::Ordering::Relaxed) {
            self.handoff.route(request, workers)
        } else {
            self.local.route(request, workers)
        }
    }
}
