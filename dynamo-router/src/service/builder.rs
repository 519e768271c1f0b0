//! Configuring a [`RouterService`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_core::BlockSize;
use dynamo_core::layers::CircuitBreakerConfig;
use parking_lot::{Mutex, RwLock};

use super::waiting::WaitingRoom;
use super::{Inner, RouterService};
use crate::affinity::AffinityConfig;
use crate::approx::{ApproxConfig, ApproxIndex};
use crate::busy::BusyThresholds;
use crate::health::{HealthConfig, HealthTracker};
use crate::index::SharedIndex;
use crate::load::LoadTracker;
use crate::policy::{ExpectedTtft, Router};
use crate::queue::QueueOrder;
use crate::selector::{SelectorConfig, WorkerSelector};
use crate::source::OverlapSource;

/// Builds a [`RouterService`].
///
/// | setting | default |
/// |---|---|
/// | [`policy`](Self::policy) | [`ExpectedTtft`] with its defaults |
/// | cache knowledge: [`kv_events`](Self::kv_events), [`approximate`](Self::approximate) | approximate mode, 120 s TTL (it is the only one that learns without an event feed) |
/// | [`thresholds`](Self::thresholds) | none: no worker is ever busy |
/// | [`queue`](Self::queue) | first come first served, 1,024 waiting requests |
/// | [`session_affinity`](Self::session_affinity) | off |
/// | [`load_tracker`](Self::load_tracker) | a tracker of its own (no other replica's load) |
/// | [`forget_after`](Self::forget_after) | 30 s |
/// | [`health`](Self::health), [`stall_timeout`](Self::stall_timeout) | [`HealthConfig::default`]: stalls after 30 s, ejection after 3 failures in a row |
/// | [`circuit_breaker`](Self::circuit_breaker) | none |
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_router::{BusyThresholds, KvCost, QueueOrder, RouterService, SharedIndex};
///
/// let block_size = BlockSize::new(64)?;
/// let index = SharedIndex::new(block_size); // feed it the workers' KV events
/// let router = RouterService::builder(block_size)
///     .policy(KvCost::default())
///     .kv_events(index.clone())
///     .thresholds(BusyThresholds { max_active_requests: Some(256), ..Default::default() })
///     .queue(QueueOrder::ShortestUncachedFirst, 4096)
///     .build();
/// assert_eq!(router.queued(), 0);
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug)]
pub struct RouterBuilder {
    config: SelectorConfig,
    policy: Option<Box<dyn Router>>,
    source: Option<Box<dyn OverlapSource>>,
    queue_order: QueueOrder,
    queue_capacity: usize,
    forget_after: Duration,
    health: HealthConfig,
    load: Option<LoadTracker>,
    breaker: Option<CircuitBreakerConfig>,
}

impl RouterBuilder {
    pub(super) fn new(block_size: BlockSize) -> Self {
        RouterBuilder {
            config: SelectorConfig::new(block_size),
            policy: None,
            source: None,
            queue_order: QueueOrder::Fcfs,
            queue_capacity: 1024,
            forget_after: Duration::from_secs(30),
            health: HealthConfig::default(),
            load: None,
            breaker: None,
        }
    }

    /// The routing policy.
    pub fn policy(mut self, policy: impl Router) -> Self {
        self.policy = Some(Box::new(policy));
        self
    }

    /// Learn the workers' caches from their KV events, applied to `index` by the caller (or a
    /// transport).
    pub fn kv_events(self, index: SharedIndex) -> Self {
        self.overlap_source(index)
    }

    /// Predict the workers' caches from the router's own decisions (engines without events).
    pub fn approximate(self, config: ApproxConfig) -> Self {
        let block_size = self.config.block_size;
        self.overlap_source(ApproxIndex::new(block_size, config))
    }

    /// Any other source of cache knowledge.
    pub fn overlap_source(mut self, source: impl OverlapSource) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Book load on `load` rather than on a tracker of its own: one that other router
    /// replicas' bookings reach too ([`ReplicaState::load`](crate::replicas::ReplicaState::load)).
    pub fn load_tracker(mut self, load: LoadTracker) -> Self {
        self.load = Some(load);
        self
    }

    /// When a worker counts as busy and takes no new request.
    pub fn thresholds(mut self, thresholds: BusyThresholds) -> Self {
        self.config.thresholds = thresholds;
        self
    }

    /// The order and the capacity of the queue used while every worker is busy.
    pub fn queue(mut self, order: QueueOrder, capacity: usize) -> Self {
        self.queue_order = order;
        self.queue_capacity = capacity;
        self
    }

    /// Keep the requests of a session (`RoutingHints::session_id`) on one worker.
    pub fn session_affinity(mut self, config: AffinityConfig) -> Self {
        self.config.affinity = Some(config);
        self
    }

    /// How long the cache of a removed worker is remembered, in case it comes back (a
    /// connection that dropped for a moment); `Duration::ZERO` forgets it at once.
    pub fn forget_after(mut self, grace: Duration) -> Self {
        self.forget_after = grace;
        self
    }

    /// How workers are watched for stalls and failures, ejected and probed; see
    /// [`health`](crate::health).
    pub fn health(mut self, config: HealthConfig) -> Self {
        self.health = config;
        self
    }

    /// End an attempt whose worker produces no chunk for `timeout` (and eject the worker);
    /// `None` turns stall detection off. Short for the same field of [`health`](Self::health).
    pub fn stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.health.stall_timeout = timeout;
        self
    }

    /// Put a [`CircuitBreaker`](dynamo_core::layers::CircuitBreaker) following `config` on
    /// each worker's engine as it joins (named `worker ID` in its log lines): a worker that
    /// keeps failing is refused at once, without being called, for the cool-down, and one
    /// request (a client's or a canary) probes it after. The router's own health checks still
    /// apply: the breaker's refusals count as the worker's failures.
    ///
    /// ```
    /// use dynamo_core::layers::CircuitBreakerConfig;
    /// use dynamo_core::{BlockSize, EchoEngine, WorkerId};
    /// use dynamo_router::RouterService;
    ///
    /// let router = RouterService::builder(BlockSize::new(16)?)
    ///     .circuit_breaker(CircuitBreakerConfig::default().failure_rate(10, 20))
    ///     .build();
    /// router.insert_worker(WorkerId::new(1), EchoEngine::new());
    /// # Ok::<(), dynamo_core::Error>(())
    /// ```
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// The router, with no workers yet.
    pub fn build(self) -> RouterService {
        let block_size = self.config.block_size;
        let policy = self
            .policy
            .unwrap_or_else(|| Box::new(ExpectedTtft::default()));
        let source = self
            .source
            .unwrap_or_else(|| Box::new(ApproxIndex::new(block_size, ApproxConfig::default())));
        let load = self.load.unwrap_or_default();
        let selector = WorkerSelector::with_load(self.config, policy, source, load);
        let health = Arc::new(HealthTracker::new(self.health, selector.clone()));
        RouterService {
            inner: Arc::new(Inner {
                selector,
                engines: RwLock::new(HashMap::new()),
                waiting: WaitingRoom::new(self.queue_order, self.queue_capacity),
                departed: Mutex::new(HashMap::new()),
                forget_after: self.forget_after,
                health,
                breaker: self.breaker,
            }),
        }
    }
}
