//! Router replicas that share their load bookings and cache predictions.
//!
//! A gateway runs several router replicas behind a load balancer. KV events reach every
//! replica, but each one books only the requests it routes, and in approximate mode predicts
//! only the placements it decided: as replicas are added, each sees a smaller part of the load
//! and of the caches, and cache hits and balance fall. A [`ReplicaState`] closes the gap: the
//! replica's load tracker tells it of every booking, which it queues as a [`ReplicaUpdate`]
//! in a bounded outbox for a transport to publish (`dynamo-transport`'s
//! `events::exchange_replica_messages`, over NATS); the transport hands the other replicas'
//! messages to [`ReplicaState::apply`], which books their requests on this replica's tracker
//! (and records their predictions in its approximate index). With busy thresholds, call
//! [`RouterService::wake_waiting`](crate::RouterService::wake_waiting) after applying a
//! message that releases load (`prefilled`, `released`, `digest`), so that a
//! request waiting for capacity looks again.
//!
//! Loss tolerance:
//! - The outbox holds at most [`ReplicaConfig::outbox_capacity`] updates; when it is full an
//!   update is dropped and counted ([`ReplicaState::dropped`],
//!   `dynamo_router_replica_dropped_total{pool}`).
//! - Every [`ReplicaConfig::digest_interval`] the transport calls [`ReplicaState::tick`],
//!   which publishes a digest of the replica's active bookings: a receiver drops the bookings
//!   it holds for that replica that are not listed (a lost release) and asks for a snapshot
//!   when a listed one is unknown to it (a lost booking). The views converge one digest after
//!   messages flow again.
//! - A remote booking that no digest renews for [`ReplicaConfig::booking_ttl`] expires (a
//!   replica that went away): load never leaks for ever.
//! - A replica that joins calls [`ReplicaState::join`]: the others answer with a snapshot of
//!   their bookings and their predictions.
//! - At most [`ReplicaConfig::max_remote_bookings`] remote bookings are held (more are
//!   refused and counted, `dynamo_router_replica_refused_total{pool}`).
//!
//! Each message applied from another replica counts in
//! `dynamo_router_replica_applied_total{pool, update}` (`booked`, `prefilled`, `released`,
//! `routed`, `digest`, `snapshot_request`). `pool` is [`ReplicaConfig::pool`].
//!
//! ```
//! use std::time::Instant;
//! use dynamo_core::{BlockSize, ReplicaId, WorkerId};
//! use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
//! use dynamo_router::{Booking, SharedIndex};
//!
//! let a = ReplicaState::new(ReplicaConfig::new(ReplicaId(1)));
//! let b = ReplicaState::new(ReplicaConfig::new(ReplicaId(2)));
//! let worker = WorkerId::new(7);
//! let guard = a.load().book(worker, Booking { prefill_tokens: 100, ..Booking::default() });
//! // The transport carries a's messages to b.
//! let now = Instant::now();
//! while let Some(message) = a.try_next_message() {
//!     b.apply(&message, now);
//! }
//! assert_eq!(b.load().load(worker).active_requests, 1);
//! drop(guard);
//! while let Some(message) = a.try_next_message() {
//!     b.apply(&message, now);
//! }
//! assert_eq!(b.load().load(worker).active_requests, 0);
//! ```

mod outbox;
mod remote;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_core::{ReplicaId, ReplicaMessage, ReplicaUpdate, SequenceHash, WorkerId};
use parking_lot::Mutex;

use crate::approx::ApproxIndex;
use crate::index::Overlaps;
use crate::load::LoadTracker;
use crate::source::OverlapSource;
use outbox::Local;
use remote::{Limits, Peers};

/// At most this many blocks in one predictions message of a snapshot.
const PREDICTIONS_PER_MESSAGE: usize = 4096;

/// The settings of a [`ReplicaState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This replica's id; choose it at random when the process starts.
    pub id: ReplicaId,
    /// Updates waiting to be published, at most; more are dropped and counted. Default 4096.
    pub outbox_capacity: usize,
    /// How often the transport should call [`ReplicaState::tick`]. Default 1 s.
    pub digest_interval: Duration,
    /// A remote booking that no digest renews for this long is dropped. Default 10 s.
    pub booking_ttl: Duration,
    /// Remote bookings held, at most, over all replicas. Default 65,536.
    pub max_remote_bookings: usize,
    /// The pool of workers the replica routes to, the `pool` label of its metrics (a frontend
    /// with a prefill and a decode router runs a replica for each). Default `"default"`.
    pub pool: &'static str,
}

impl ReplicaConfig {
    /// The defaults, for the replica `id`.
    pub fn new(id: ReplicaId) -> Self {
        ReplicaConfig {
            id,
            outbox_capacity: 4096,
            digest_interval: Duration::from_secs(1),
            booking_ttl: Duration::from_secs(10),
            max_remote_bookings: 65_536,
            pool: "default",
        }
    }

    /// Set [`ReplicaConfig::pool`].
    pub fn with_pool(mut self, pool: &'static str) -> Self {
        self.pool = pool;
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            ttl: self.booking_ttl,
            max_bookings: self.max_remote_bookings,
            ask_pause: self.digest_interval,
            pool: self.pool,
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: ReplicaConfig,
    local: Arc<Local>,
    load: LoadTracker,
    peers: Mutex<Peers>,
    approx: Mutex<Option<ApproxIndex>>,
}

/// One router replica's side of the shared state; cheap to clone.
///
/// Give [`load`](Self::load) to the router ([`RouterBuilder::load_tracker`](crate::RouterBuilder::load_tracker)
/// or [`WorkerSelector::with_load`](crate::WorkerSelector::with_load)), and in approximate
/// mode wrap its [`ApproxIndex`] with [`predictions`](Self::predictions); publish what
/// [`next_message`](Self::next_message) returns and [`apply`](Self::apply) what the other
/// replicas publish.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    inner: Arc<Inner>,
}

impl ReplicaState {
    /// A replica with nothing booked.
    pub fn new(config: ReplicaConfig) -> Self {
        let local = Arc::new(Local::new(config.outbox_capacity, config.pool));
        let load = LoadTracker::observed(local.clone());
        ReplicaState {
            inner: Arc::new(Inner {
                config,
                local,
                load,
                peers: Mutex::new(Peers::default()),
                approx: Mutex::new(None),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ReplicaConfig {
        &self.inner.config
    }

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.inner.config.id
    }

    /// The load tracker to route with: its bookings are published, and the other replicas'
    /// are booked on it.
    pub fn load(&self) -> LoadTracker {
        self.inner.load.clone()
    }

    /// Share the predictions of approximate mode: returns `index` as an overlap source whose
    /// predictions are published, and records the other replicas' in `index`.
    pub fn predictions(&self, index: ApproxIndex) -> SharedPredictions {
        *self.inner.approx.lock() = Some(index.clone());
        SharedPredictions {
            index,
            state: self.clone(),
        }
    }

    /// The next message to publish, if one is waiting.
    pub fn try_next_message(&self) -> Option<ReplicaMessage> {
        self.inner
            .local
            .outbox
            .pop()
            .map(|update| self.message(update))
    }

    /// The next message to publish, when one is waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken from the outbox only when the future completes.
    pub async fn next_message(&self) -> ReplicaMessage {
        let update = self.inner.local.outbox.next().await;
        self.message(update)
    }

    fn message(&self, update: ReplicaUpdate) -> ReplicaMessage {
        ReplicaMessage {
            replica: self.id(),
            update,
        }
    }

    /// Updates dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.inner.local.outbox.dropped()
    }

    /// Ask the other replicas for their state: call it once subscribed, when joining.
    pub fn join(&self) {
        self.inner
            .local
            .outbox
            .push(ReplicaUpdate::SnapshotRequest { of: None });
    }

    /// Expire the remote bookings nobody renewed and queue a digest of this replica's own;
    /// call it every [`ReplicaConfig::digest_interval`].
    pub fn tick(&self, now: Instant) {
        self.inner
            .peers
            .lock()
            .expire(now, self.inner.config.limits());
        self.inner.local.push_digest();
    }

    /// Apply a message another replica published (this replica's own are ignored), at `now`.
    pub fn apply(&self, message: &ReplicaMessage, now: Instant) {
        let inner = &*self.inner;
        let peer = message.replica;
        if peer == self.id() {
            return;
        }
        let limits = inner.config.limits();
        let update = kind(&message.update);
        metrics::counter!("dynamo_router_replica_applied_total", "pool" => inner.config.pool, "update" => update)
            .increment(1);
        match &message.update {
            ReplicaUpdate::Booked(booking) => {
                inner
                    .peers
                    .lock()
                    .booked(&inner.load, peer, booking.clone(), now, limits);
            }
            ReplicaUpdate::Prefilled { booking } => inner.peers.lock().prefilled(peer, *booking),
            ReplicaUpdate::Released { booking } => inner.peers.lock().released(peer, *booking),
            ReplicaUpdate::Routed { worker, blocks } => {
                let approx = inner.approx.lock().clone();
                if let Some(approx) = approx
                    && approx.record(*worker, blocks, now).is_err()
                {
                    metrics::counter!("dynamo_router_approx_skipped_total").increment(1);
                }
            }
            ReplicaUpdate::Digest { bookings }
                if inner.peers.lock().digest(peer, bookings, now, limits) =>
            {
                inner
                    .local
                    .outbox
                    .push(ReplicaUpdate::SnapshotRequest { of: Some(peer) });
            }
            ReplicaUpdate::SnapshotRequest { of } if of.is_none_or(|of| of == self.id()) => {
                self.answer_snapshot();
            }
            _ => {}
        }
    }

    /// Queue this replica's bookings, then its predictions.
    fn answer_snapshot(&self) {
        let outbox = &self.inner.local.outbox;
        // Every booking (which a receiver adds or renews), then the digest (which drops what
        // it holds of this replica beyond them): each message stays as small as usual.
        self.inner.local.push_snapshot();
        let approx = self.inner.approx.lock().clone();
        for (worker, blocks) in approx.map(|index| index.export()).unwrap_or_default() {
            for chunk in blocks.chunks(PREDICTIONS_PER_MESSAGE) {
                outbox.push(ReplicaUpdate::Routed {
                    worker,
                    blocks: chunk.to_vec(),
                });
            }
        }
    }

    /// The other replicas' active bookings as this replica knows them: each replica with its
    /// booking numbers, sorted. For tests and diagnostics.
    pub fn remote_bookings(&self) -> Vec<(ReplicaId, Vec<u64>)> {
        self.inner.peers.lock().view()
    }

    /// This replica's own active booking numbers, sorted.
    pub fn own_bookings(&self) -> Vec<u64> {
        self.inner
            .local
            .digest()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

/// The name of an update's kind, for the metric's label.
fn kind(update: &ReplicaUpdate) -> &'static str {
    match update {
        ReplicaUpdate::Booked(_) => "booked",
        ReplicaUpdate::Prefilled { .. } => "prefilled",
        ReplicaUpdate::Released { .. } => "released",
        ReplicaUpdate::Routed { .. } => "routed",
        ReplicaUpdate::Digest { .. } => "digest",
        ReplicaUpdate::SnapshotRequest { .. } => "snapshot_request",
        _ => "other",
    }
}

/// An [`ApproxIndex`] whose predictions are shared with the other replicas; from
/// [`ReplicaState::predictions`].
#[derive(Debug, Clone)]
pub struct SharedPredictions {
    index: ApproxIndex,
    state: ReplicaState,
}

impl OverlapSource for SharedPredictions {
    fn overlaps(&self, blocks: &[SequenceHash], now: Instant) -> Overlaps {
        self.index.overlaps(blocks, now)
    }

    fn overlaps_into(&self, blocks: &[SequenceHash], now: Instant, answer: &mut Overlaps) {
        self.index.overlaps_into(blocks, now, answer);
    }

    fn routed(&self, worker: WorkerId, blocks: &[SequenceHash], now: Instant) {
        OverlapSource::routed(&self.index, worker, blocks, now);
        self.state.inner.local.outbox.push(ReplicaUpdate::Routed {
            worker,
            blocks: blocks.to_vec(),
        });
    }

    fn remove_worker(&self, worker: WorkerId) {
        self.index.remove_worker(worker);
    }
}
