//! The router as a tower `Service`: an Engine in front of a changing set of worker Engines.

mod builder;
mod stream;
mod waiting;

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dynamo_core::layers::{CircuitBreaker, CircuitBreakerConfig};
use dynamo_core::{
    BoxEngine, Delivery, Engine, EngineExt, Error, GenerateRequest, TokenStream, WorkerId,
};
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tower::Service;
use tower::discover::{Change, Discover};

use crate::health::{HealthTracker, Stalled, Watched};
use crate::index::TierOverlap;
use crate::selector::{NotRouted, RouteRequest, WorkerSelector};

pub use builder::RouterBuilder;
use stream::{Booked, GuardedStream, OpenChoices};
use waiting::WaitingRoom;

/// A KV-aware router in front of worker engines; itself an [`Engine`], so it nests.
///
/// For each request the service hashes the prompt once, asks its [`WorkerSelector`] for a
/// worker (a snapshot of cached prefixes and booked load, the policy's decision, and the load
/// booked, in one step), then dispatches to that worker's engine and streams its tokens back.
/// The booking is released when the stream ends, fails or is dropped, and its prefill part at
/// the first token.
///
/// **Readiness and backpressure.** `poll_ready` is ready while a request could be placed now:
/// some worker is not busy (see [`BusyThresholds`](crate::BusyThresholds)), or the wait
/// queue has room. When every worker is busy a request waits in that bounded queue, served in
/// the configured [`QueueOrder`](crate::QueueOrder), until a booking is released. When the
/// queue is full too, `poll_ready` is `Pending` until a booking is released or a worker joins,
/// so tower's `LoadShedLayer` refuses at once and `ConcurrencyLimitLayer` and timeouts compose
/// as usual; a caller that skips readiness gets [`Error::Overloaded`] from `call`, which a
/// gateway answers with 503. With a queue of capacity 0, the router is ready exactly when some
/// worker is not busy. A router with no worker at all is ready, and fails each request at once
/// with [`Error::Unavailable`]. Readiness is not a reservation: clones share the capacity, and
/// one may take what another saw. The chosen worker's own readiness is awaited before
/// dispatch.
///
/// **Membership** changes through [`insert_worker`](RouterService::insert_worker) and
/// [`remove_worker`](RouterService::remove_worker), or from a [`Discover`] stream driven by the
/// future that [`discover`](RouterService::discover) returns. A removed worker gets no new
/// requests and its active streams run to their end. What the router knows of its cache is
/// kept for [`forget_after`](RouterBuilder::forget_after) (30 s by default), so a worker whose
/// connection drops for a moment comes back with its cached prefixes still routed to; after
/// that it is forgotten.
///
/// **Metrics** (through the `metrics` crate): `dynamo_router_decisions_total{worker}`,
/// `dynamo_router_overlap_blocks` and `dynamo_router_cache_hit_ratio` (histograms, per
/// decision), `dynamo_router_queue_depth` (gauge), `dynamo_router_rejected_total{reason}`.
///
/// ```
/// use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest, WorkerId};
/// use dynamo_router::RouterService;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_core::Error> {
/// let router = RouterService::builder(BlockSize::new(4)?).build();
/// router.insert_worker(WorkerId::new(1), EchoEngine::new());
/// router.insert_worker(WorkerId::new(2), EchoEngine::new());
///
/// let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3, 4, 5]).with_max_tokens(3);
/// let generation = router.clone().generate_all(request).await?;
/// assert_eq!(generation.tokens, [1, 2, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RouterService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    selector: WorkerSelector,
    engines: RwLock<HashMap<WorkerId, BoxEngine>>,
    waiting: WaitingRoom,
    /// Removed workers whose cache knowledge is kept until the deadline.
    departed: Mutex<HashMap<WorkerId, Instant>>,
    forget_after: Duration,
    health: Arc<HealthTracker>,
    /// The circuit breaker each worker's engine wears, if any.
    breaker: Option<CircuitBreakerConfig>,
}

impl RouterService {
    /// Start configuring a router for blocks of `block_size` tokens.
    pub fn builder(block_size: dynamo_core::BlockSize) -> RouterBuilder {
        RouterBuilder::new(block_size)
    }

    /// The routing core: workers, booked load, policy.
    pub fn selector(&self) -> &WorkerSelector {
        &self.inner.selector
    }

    /// Whether `worker` is ejected from routing for failing or stalling; see
    /// [`health`](crate::health).
    pub fn is_ejected(&self, worker: WorkerId) -> bool {
        self.inner.health.is_ejected(worker)
    }

    /// The health of the workers.
    pub(crate) fn health(&self) -> &HealthTracker {
        &self.inner.health
    }

    /// The engine of `worker`, if it is a member.
    pub(crate) fn engine(&self, worker: WorkerId) -> Option<BoxEngine> {
        self.inner.engines.read().get(&worker).cloned()
    }

    /// The number of requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.inner.waiting.len()
    }

    /// Capacity was released outside this router: a request of another router replica, booked
    /// on this router's load tracker ([`replicas`](crate::replicas)), ended. The next waiting
    /// request looks again, and so does a caller waiting for readiness.
    pub fn wake_waiting(&self) {
        self.inner.waiting.wake_next();
    }

    /// Add (or replace) a worker and its engine.
    pub fn insert_worker<E>(&self, worker: WorkerId, engine: E)
    where
        E: Engine + Clone + Send + Sync + 'static,
        E::Future: Send + 'static,
    {
        let engine = match self.inner.breaker {
            Some(config) => {
                CircuitBreaker::named(engine, config, format!("worker {worker}")).boxed_engine()
            }
            None => engine.boxed_engine(),
        };
        self.inner.engines.write().insert(worker, engine);
        self.inner.departed.lock().remove(&worker);
        self.inner.health.insert(worker);
        self.inner.selector.insert_worker(worker);
        self.inner.waiting.wake_next();
        self.forget_departed();
    }

    /// Remove a worker: no new requests go to it; its active streams run to their end. What
    /// it caches is forgotten after [`forget_after`](RouterBuilder::forget_after), unless it
    /// is inserted again before.
    pub fn remove_worker(&self, worker: WorkerId) {
        self.inner.selector.withdraw_worker(worker);
        self.inner.engines.write().remove(&worker);
        self.inner.health.remove(worker);
        let deadline = now_std() + self.inner.forget_after;
        self.inner.departed.lock().insert(worker, deadline);
        self.forget_departed();
        // With no worker left, waiting requests and callers of `poll_ready` fail fast.
        self.inner.waiting.wake_next();
    }

    /// Forget the cache of every removed worker whose grace period has passed; returns the
    /// next deadline, if a removed worker is still remembered. Membership changes call it, and
    /// so does the future of [`discover`](Self::discover) at each deadline.
    pub fn forget_departed(&self) -> Option<Instant> {
        let now = now_std();
        let mut departed = self.inner.departed.lock();
        departed.retain(|&worker, &mut deadline| {
            let due = deadline <= now;
            if due {
                self.inner.selector.forget_worker(worker);
            }
            !due
        });
        departed.values().min().copied()
    }

    /// A future that applies the membership changes of `discover` until it ends; spawn it on
    /// your runtime.
    ///
    /// # Errors
    ///
    /// The first error of the discovery stream, which ends the future.
    pub fn discover<D>(
        &self,
        discover: D,
    ) -> impl Future<Output = Result<(), D::Error>> + Send + 'static
    where
        D: Discover<Key = WorkerId> + Send + 'static,
        D::Service: Engine + Clone + Send + Sync + 'static,
        <D::Service as Service<GenerateRequest>>::Future: Send + 'static,
    {
        let router = self.clone();
        async move {
            let mut discover = std::pin::pin!(discover);
            loop {
                let forget = router.forget_departed();
                let change = tokio::select! {
                    change = poll_fn(|cx| discover.as_mut().poll_discover(cx)) => change,
                    () = sleep_until(forget) => continue,
                };
                let Some(change) = change else {
                    return Ok(());
                };
                match change? {
                    Change::Insert(worker, engine) => router.insert_worker(worker, engine),
                    Change::Remove(worker) => router.remove_worker(worker),
                }
            }
        }
    }
}

impl Inner {
    /// Whether a request now would be placed or queued rather than refused.
    fn has_capacity(&self) -> bool {
        self.waiting.has_room() || self.selector.has_free_worker()
    }

    async fn dispatch(self: Arc<Self>, request: GenerateRequest) -> Result<TokenStream, Error> {
        // A request no engine would accept books nothing.
        request.validate()?;
        let route = RouteRequest::new(&request, self.selector.config().block_size);
        let placed = self.place(&route, request.cancellation()).await?;
        self.run(placed, request).await
    }

    /// Send `request` to the worker `placed` booked, and stream its tokens back under the
    /// booking, watched for stalls.
    async fn run(&self, placed: Placed, request: GenerateRequest) -> Result<TokenStream, Error> {
        let booked = placed.booked;
        let worker = booked.worker();
        let engine = self.engines.read().get(&worker).cloned();
        let Some(mut engine) = engine else {
            return Err(Error::unavailable(format!(
                "worker {worker} left before the request reached it"
            )));
        };
        self.health.dispatched(worker);
        let whole = request.delivery == Delivery::Whole;
        let choices = OpenChoices::of(&request);
        let call = engine.generate(request);
        let stream = match self.health.config().stall_timeout {
            Some(timeout) => match tokio::time::timeout(timeout, call).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => {
                    let stalled = Stalled { worker, timeout };
                    self.health.stalled(worker, &stalled);
                    return Err(stalled.into_error());
                }
            },
            None => call.await,
        };
        let stream = stream.inspect_err(|error| self.health.refused(worker, error))?;
        let guarded = GuardedStream::new(stream, booked, choices);
        let mut watched = Watched::new(guarded, worker, self.health.clone());
        if whole {
            // The engine may hold the answer until it is complete (an upstream adapter's
            // non-streamed call): only the call itself is under the stall timeout.
            watched = watched.without_stall_deadline();
        }
        Ok(TokenStream::new(watched, CancellationToken::new()))
    }

    /// Book a worker for `route`, waiting in the queue while every worker is busy.
    async fn place(
        self: &Arc<Self>,
        route: &RouteRequest,
        cancel: &CancellationToken,
    ) -> Result<Placed, Error> {
        let mut ticket = None;
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let uncached_tokens = match self.select(route) {
                Ok(booked) => {
                    if ticket.is_some() {
                        // Woken and placed: there may be room for the next one too.
                        self.waiting.wake_next();
                    }
                    return Ok(booked);
                }
                Err(NotRouted::AllBusy { uncached_tokens }) => uncached_tokens,
                Err(other) => return Err(rejection(other)),
            };
            let wait = self
                .waiting
                .enter(route.priority, uncached_tokens, &mut ticket)
                .ok_or_else(|| {
                    reject("queue_full");
                    Error::Overloaded {
                        message: format!(
                            "every worker is busy and {} requests are already waiting",
                            self.waiting.capacity()
                        ),
                        retry_after: Some(std::time::Duration::from_secs(1)),
                    }
                })?;
            // A booking released between the failed selection and entering the queue found
            // nobody to wake: look once more before sleeping.
            match self.select(route) {
                Ok(booked) => return Ok(booked),
                Err(NotRouted::AllBusy { .. }) => {}
                Err(other) => return Err(rejection(other)),
            }
            wait.woken_or(cancel).await?;
        }
    }

    fn select(self: &Arc<Self>, route: &RouteRequest) -> Result<Placed, NotRouted> {
        let routed = self.selector.select(route, now_std())?;
        Ok(Placed {
            cached: routed.cached,
            booked: Booked::new(routed.guard, self.clone()),
        })
    }
}

/// A worker booked for a request that has not been sent yet: what the disaggregated router
/// holds while it decides where the prompt is computed.
#[derive(Debug)]
pub(crate) struct Placed {
    booked: Booked,
    cached: TierOverlap,
}

impl Placed {
    /// The booked worker.
    pub(crate) fn worker(&self) -> WorkerId {
        self.booked.worker()
    }

    /// The leading prompt blocks the worker caches, by tier.
    pub(crate) fn cached(&self) -> TierOverlap {
        self.cached
    }

    /// End the prefill part of the booking now: another worker computes the prompt.
    pub(crate) fn prefilled_elsewhere(&mut self) {
        self.booked.first_token();
    }
}

impl RouterService {
    /// Book a worker for `route`, waiting in the queue while every worker is busy.
    pub(crate) async fn book(
        &self,
        route: &RouteRequest,
        cancel: &CancellationToken,
    ) -> Result<Placed, Error> {
        self.inner.place(route, cancel).await
    }

    /// Book a worker for `route` if one is free now; `None` when there is none, or every one
    /// is busy.
    pub(crate) fn try_book(&self, route: &RouteRequest) -> Option<Placed> {
        self.inner.select(route).ok()
    }

    /// Send `request` to the worker `placed` booked.
    pub(crate) async fn run(
        &self,
        placed: Placed,
        request: GenerateRequest,
    ) -> Result<TokenStream, Error> {
        self.inner.run(placed, request).await
    }
}

/// Sleep until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The current time, from tokio's clock so that paused-time tests control it.
fn now_std() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn reject(reason: &'static str) {
    metrics::counter!("dynamo_router_rejected_total", "reason" => reason).increment(1);
}

fn rejection(not_routed: NotRouted) -> Error {
    match not_routed {
        NotRouted::NoWorkers => {
            reject("no_workers");
            Error::unavailable("no worker is available")
        }
        NotRouted::Overloaded | NotRouted::AllBusy { .. } => {
            reject("overloaded");
            Error::overloaded("the routing policy refused the request")
        }
        other => Error::internal(other.to_string()),
    }
}

impl Service<GenerateRequest> for RouterService {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.inner.has_capacity() {
            return Poll::Ready(Ok(()));
        }
        self.inner.waiting.wake_when_ready(cx.waker());
        // Capacity released between the first look and registering would wake nobody.
        if self.inner.has_capacity() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        Box::pin(self.inner.clone().dispatch(request))
    }
}
