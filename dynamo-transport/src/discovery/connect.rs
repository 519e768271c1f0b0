//! From registered workers to connected worker engines: a `tower::discover::Discover`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use dynamo_core::{BlockSize, Error, KvLayout, WorkerId, WorkerRole};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::discover::Change;

use super::{Discovery, MembershipStream, WorkerRecord};
use crate::Transport;

/// What [`connect`] accepts and how it reconnects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectConfig {
    /// The router's block size: a worker registered with another is refused.
    pub block_size: BlockSize,
    /// Serve only workers of this model; `None` takes every worker.
    pub model: Option<String>,
    /// How long to wait between attempts to reach a registered worker.
    pub reconnect: Duration,
    /// Serve only workers of these roles; empty takes every role.
    pub roles: Vec<WorkerRole>,
    /// Serve only workers whose KV layout pairs with this one; a prefill or decode worker that
    /// registers none is refused too (an aggregated one is not: it hands nothing over). `None`
    /// does not look at layouts.
    pub kv_layout: Option<KvLayout>,
}

impl ConnectConfig {
    /// Accept workers of `block_size`, any model; retry an unreachable worker every 500 ms.
    pub fn new(block_size: BlockSize) -> Self {
        ConnectConfig {
            block_size,
            model: None,
            reconnect: Duration::from_millis(500),
            roles: Vec::new(),
            kv_layout: None,
        }
    }

    /// Serve only workers of `roles`: a disaggregated router's prefill pool takes
    /// [`WorkerRole::Prefill`], its decode pool [`WorkerRole::Decode`] and
    /// [`WorkerRole::Aggregated`].
    pub fn roles(mut self, roles: impl IntoIterator<Item = WorkerRole>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }

    /// Serve only workers whose blocks pair with `layout`.
    pub fn kv_layout(mut self, layout: KvLayout) -> Self {
        self.kv_layout = Some(layout);
        self
    }

    /// Serve only workers of `model`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Wait `every` between attempts to reach a worker.
    pub fn reconnect(mut self, every: Duration) -> Self {
        self.reconnect = every;
        self
    }
}

/// The engines of the registered workers, as a [`tower::discover::Discover`]: a stream of
/// [`Change::Insert`] when a worker is connected and [`Change::Remove`] when its connection is
/// lost or it leaves the registry. Made by [`connect`].
///
/// It does its work as it is polled (no task of its own): poll it, for example through
/// `dynamo_router::RouterService::discover`, and it connects to each worker that registers,
/// retries one it cannot reach every [`ConnectConfig::reconnect`], and reconnects one whose
/// connection drops. It logs each change through `tracing` (`worker 1 at ADDR joined`,
/// `… is out of routing: …`, `… left`, `… refused: …`). It ends when the registry's stream
/// ends. Dropping it stops the connection attempts; engines it handed out stay usable.
pub struct Connected<T: Transport> {
    registry: MembershipStream,
    registry_ended: bool,
    transport: T,
    config: ConnectConfig,
    workers: HashMap<WorkerId, Followed>,
    next_attempt: u64,
    steps: FuturesUnordered<BoxFuture<'static, Option<Step<T::Remote>>>>,
}

/// A registered worker.
struct Followed {
    record: WorkerRecord,
    /// Which attempt the worker's pending steps belong to; older ones are ignored.
    attempt: u64,
    connected: bool,
    /// An outage is reported once, not at every retry.
    reported: bool,
    /// Cancelled when the worker leaves: its pending steps end.
    left: CancellationToken,
}

/// What a worker's background step came to.
enum Step<R> {
    Connected {
        id: WorkerId,
        attempt: u64,
        remote: R,
    },
    Failed {
        id: WorkerId,
        attempt: u64,
        error: Error,
    },
    Lost {
        id: WorkerId,
        attempt: u64,
    },
    Retry {
        id: WorkerId,
        attempt: u64,
    },
}

/// Connect to every worker `discovery` reports, through `transport`; see [`Connected`].
///
/// ```no_run
/// use dynamo_core::BlockSize;
/// use dynamo_transport::Tcp;
/// use dynamo_transport::discovery::{ConnectConfig, DirectoryDiscovery, connect};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // The workers registered in a shared directory (`EtcdDiscovery` with the `etcd` feature).
/// let registry = DirectoryDiscovery::new("/tmp/dynamo-workers");
/// let config = ConnectConfig::new(BlockSize::new(16)?).model("smollm2");
/// let workers = connect(&registry, Tcp::new(), config);
/// // A router applies the changes: `tokio::spawn(router.discover(workers))`.
/// # drop(workers);
/// # Ok(())
/// # }
/// ```
pub fn connect<T: Transport>(
    discovery: &dyn Discovery,
    transport: T,
    config: ConnectConfig,
) -> Connected<T> {
    Connected {
        registry: discovery.watch(),
        registry_ended: false,
        transport,
        config,
        workers: HashMap::new(),
        next_attempt: 0,
        steps: FuturesUnordered::new(),
    }
}

impl<T: Transport> Connected<T> {
    fn refusal(&self, record: &WorkerRecord) -> Option<String> {
        if record.block_size != self.config.block_size.get() {
            return Some(format!(
                "its KV blocks hold {} tokens and the router's {}: its cache could not be matched",
                record.block_size,
                self.config.block_size.get()
            ));
        }
        if let Some(model) = &self.config.model
            && *model != record.model
        {
            return Some(format!(
                "it serves `{}` and this router `{model}`",
                record.model
            ));
        }
        let layout = self.config.kv_layout.as_ref()?;
        match &record.kv_layout {
            // An aggregated worker hands nothing over; it computes a hand-over's prompt itself.
            None if record.role == WorkerRole::Aggregated => None,
            None => Some(format!(
                "it is a {} worker that does not say how its KV blocks are laid out",
                record.role
            )),
            Some(theirs) => layout
                .check_pairs_with(theirs)
                .err()
                .map(|mismatch| format!("its KV blocks could not be handed over: {mismatch}")),
        }
    }

    /// A worker registered (or changed its record).
    fn joined(
        &mut self,
        id: WorkerId,
        record: WorkerRecord,
    ) -> Option<Change<WorkerId, T::Remote>> {
        if !self.config.roles.is_empty() && !self.config.roles.contains(&record.role) {
            // Another pool's worker (a disaggregated router follows one registry twice).
            tracing::debug!("worker {id} is a {} worker: not in this pool", record.role);
            return self.left(id, false);
        }
        if let Some(reason) = self.refusal(&record) {
            tracing::warn!("worker {id} refused: {reason}");
            return self.left(id, false);
        }
        let previous = self.workers.remove(&id);
        if let Some(previous) = &previous {
            previous.left.cancel();
        }
        let left = CancellationToken::new();
        let attempt = self.next_attempt();
        self.workers.insert(
            id,
            Followed {
                record,
                attempt,
                connected: false,
                reported: false,
                left,
            },
        );
        self.attempt(id);
        // A new record for a connected worker: route to it again once the new address answers.
        previous
            .filter(|previous| previous.connected)
            .map(|_| Change::Remove(id))
    }

    /// A worker left the registry (or its record became unusable).
    fn left(&mut self, id: WorkerId, report: bool) -> Option<Change<WorkerId, T::Remote>> {
        let worker = self.workers.remove(&id)?;
        worker.left.cancel();
        if report {
            tracing::info!("worker {id} left");
        }
        worker.connected.then_some(Change::Remove(id))
    }

    fn next_attempt(&mut self) -> u64 {
        self.next_attempt += 1;
        self.next_attempt
    }

    /// Start connecting to `id`.
    fn attempt(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        let transport = self.transport.clone();
        let address = worker.record.address.clone();
        let attempt = worker.attempt;
        let left = worker.left.clone();
        self.steps.push(
            async move {
                let result = tokio::select! {
                    result = transport.connect(&address) => result,
                    () = left.cancelled() => return None,
                };
                Some(match result {
                    Ok(remote) => Step::Connected {
                        id,
                        attempt,
                        remote,
                    },
                    Err(error) => Step::Failed { id, attempt, error },
                })
            }
            .boxed(),
        );
    }

    /// Try `id` again after the reconnect delay.
    fn retry_later(&mut self, id: WorkerId, attempt: u64, left: CancellationToken) {
        let delay = self.config.reconnect;
        self.steps.push(
            async move {
                tokio::select! {
                    () = tokio::time::sleep(delay) => Some(Step::Retry { id, attempt }),
                    () = left.cancelled() => None,
                }
            }
            .boxed(),
        );
    }

    fn step(&mut self, step: Step<T::Remote>) -> Option<Change<WorkerId, T::Remote>> {
        match step {
            Step::Connected {
                id,
                attempt,
                remote,
            } => {
                let closed = self.transport.closed(&remote);
                let worker = self.current(id, attempt)?;
                worker.connected = true;
                worker.reported = false;
                tracing::info!("worker {id} at {} joined", worker.record.address);
                let left = worker.left.clone();
                self.steps.push(
                    async move {
                        tokio::select! {
                            () = closed => Some(Step::Lost { id, attempt }),
                            () = left.cancelled() => None,
                        }
                    }
                    .boxed(),
                );
                Some(Change::Insert(id, remote))
            }
            Step::Failed { id, attempt, error } => {
                let worker = self.current(id, attempt)?;
                if !worker.reported {
                    worker.reported = true;
                    let address = &worker.record.address;
                    tracing::warn!("worker {id} at {address} is out of routing: {error}");
                }
                let left = worker.left.clone();
                self.retry_later(id, attempt, left);
                None
            }
            Step::Lost { id, attempt } => {
                let worker = self.current(id, attempt)?;
                worker.connected = false;
                worker.reported = true;
                let address = &worker.record.address;
                tracing::warn!(
                    "worker {id} at {address} is out of routing: the connection to {address} was lost"
                );
                // Reconnect at once: a worker that restarted on the same address is back.
                self.attempt(id);
                Some(Change::Remove(id))
            }
            Step::Retry { id, attempt } => {
                self.current(id, attempt)?;
                self.attempt(id);
                None
            }
        }
    }

    /// The worker `id`, if `attempt` is still its current one.
    fn current(&mut self, id: WorkerId, attempt: u64) -> Option<&mut Followed> {
        self.workers
            .get_mut(&id)
            .filter(|worker| worker.attempt == attempt)
    }
}

// No field is pinned: the registry stream and the steps are boxed.
impl<T: Transport> Unpin for Connected<T> {}

impl<T: Transport> Stream for Connected<T> {
    type Item = Result<Change<WorkerId, T::Remote>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.registry_ended {
                match this.registry.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(Change::Insert(id, record)))) => {
                        match this.joined(id, record) {
                            Some(change) => return Poll::Ready(Some(Ok(change))),
                            None => continue,
                        }
                    }
                    Poll::Ready(Some(Ok(Change::Remove(id)))) => match this.left(id, true) {
                        Some(change) => return Poll::Ready(Some(Ok(change))),
                        None => continue,
                    },
                    Poll::Ready(Some(Err(error))) => {
                        tracing::warn!("discovery: {error}");
                        continue;
                    }
                    Poll::Ready(None) => {
                        this.registry_ended = true;
                        for worker in this.workers.values() {
                            worker.left.cancel();
                        }
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            } else {
                return Poll::Ready(None);
            }
            match this.steps.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(step))) => {
                    if let Some(change) = this.step(step) {
                        return Poll::Ready(Some(Ok(change)));
                    }
                }
                // A step of a worker that left, or nothing to do until the registry changes.
                Poll::Ready(Some(None)) => {}
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: Transport> std::fmt::Debug for Connected<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("config", &self.config)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}
