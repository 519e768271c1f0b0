//! Keeping a router's worker set equal to what discovery reports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use dynamo_core::{BlockSize, Error, WorkerId};
use dynamo_router::{RouterService, SharedIndex};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Discovery, DiscoveryError, Membership, WorkerRecord};
use crate::tcp::RemoteEngine;

/// Reports waiting for the caller of [`follow`]; when full, following waits for the caller.
const REPORTS: usize = 256;

/// What [`follow`] checks and how it reconnects.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The router's block size: a worker registered with another is refused.
    pub block_size: BlockSize,
    /// Serve only workers of this model; `None` takes every worker.
    pub model: Option<String>,
    /// The router's KV index, to forget a worker's blocks when it leaves.
    pub index: Option<SharedIndex>,
    /// How long to wait between attempts to reach a registered worker.
    pub reconnect: Duration,
    /// Connections to open to each worker ([`RemoteEngine::connect_pooled`]).
    pub connections: usize,
}

impl FollowConfig {
    /// Accept workers of `block_size`, any model, without an index; one connection to each,
    /// retried every 500 ms.
    pub fn new(block_size: BlockSize) -> Self {
        FollowConfig {
            block_size,
            model: None,
            index: None,
            reconnect: Duration::from_millis(500),
            connections: 1,
        }
    }
}

/// What happened to the router's worker set, for the caller to log.
#[derive(Debug)]
#[non_exhaustive]
pub enum Followed {
    /// A worker is connected and takes requests.
    Connected(WorkerRecord),
    /// A registered worker cannot be reached, or its connection was lost: it takes no
    /// requests until a reconnection succeeds (attempted every `reconnect`).
    Unreachable {
        /// The worker.
        id: WorkerId,
        /// Where it was registered.
        address: SocketAddr,
        /// Why.
        error: Error,
    },
    /// A worker left the registry; its blocks are forgotten.
    Left(WorkerId),
    /// A worker's record does not fit this router.
    Refused {
        /// The record.
        record: WorkerRecord,
        /// Why it does not fit.
        reason: String,
    },
    /// The registry reported an error; following goes on.
    Discovery(DiscoveryError),
}

/// Keep `router`'s workers equal to the registered ones: connect to each worker that joins
/// (over [`RemoteEngine`]), take it out of routing while its connection is down and put it
/// back when a reconnection succeeds, and remove it when it leaves.
///
/// The returned stream reports each change; poll it (for example in a task that logs the
/// reports), because following waits when 256 reports are unread. Dropping it stops
/// following and takes the workers it connected out of the router.
pub fn follow(
    discovery: &dyn Discovery,
    router: RouterService,
    config: FollowConfig,
) -> impl Stream<Item = Followed> + Send + 'static {
    let (reports, mut received) = mpsc::channel(REPORTS);
    let mut changes = discovery.watch();
    tokio::spawn(async move {
        let mut follower = Follower {
            router,
            config,
            reports,
            workers: HashMap::new(),
        };
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                () = follower.reports.closed() => None,
            };
            let Some(change) = change else { break };
            if follower.apply(change).await.is_err() {
                break;
            }
        }
        for (_, worker) in follower.workers.drain() {
            worker.left.cancel();
        }
    });
    futures::stream::poll_fn(move |cx| received.poll_recv(cx))
}

struct Follower {
    router: RouterService,
    config: FollowConfig,
    reports: mpsc::Sender<Followed>,
    /// Each followed worker's connection task, cancelled when it leaves.
    workers: HashMap<WorkerId, Connecting>,
}

/// A worker's connection task.
struct Connecting {
    left: CancellationToken,
    task: JoinHandle<()>,
}

impl Connecting {
    /// Stop the task and wait until it has taken its engine out of the router.
    async fn stop(self) {
        self.left.cancel();
        let _ = self.task.await;
    }
}

/// The caller dropped the reports.
struct Stopped;

impl Follower {
    async fn report(&self, report: Followed) -> Result<(), Stopped> {
        self.reports.send(report).await.map_err(|_| Stopped)
    }

    async fn apply(&mut self, change: Result<Membership, DiscoveryError>) -> Result<(), Stopped> {
        match change {
            Err(error) => self.report(Followed::Discovery(error)).await,
            Ok(Membership::Left(id)) => {
                if let Some(worker) = self.workers.remove(&id) {
                    worker.stop().await;
                    if let Some(index) = &self.config.index {
                        index.remove_worker(id);
                    }
                    self.report(Followed::Left(id)).await?;
                }
                Ok(())
            }
            Ok(Membership::Joined(record)) => {
                if let Some(reason) = self.refusal(&record) {
                    return self.report(Followed::Refused { record, reason }).await;
                }
                // A new record for a known worker replaces its connection.
                if let Some(previous) = self.workers.remove(&record.id) {
                    previous.stop().await;
                }
                let left = CancellationToken::new();
                let task = tokio::spawn(keep_connected(
                    record.clone(),
                    self.router.clone(),
                    self.reports.clone(),
                    (self.config.reconnect, self.config.connections),
                    left.clone(),
                ));
                self.workers.insert(record.id, Connecting { left, task });
                Ok(())
            }
        }
    }

    fn refusal(&self, record: &WorkerRecord) -> Option<String> {
        if record.block_size != self.config.block_size.get() {
            return Some(format!(
                "its KV blocks hold {} tokens and the router's {}: its cache could not be matched",
                record.block_size,
                self.config.block_size.get()
            ));
        }
        match &self.config.model {
            Some(model) if *model != record.model => Some(format!(
                "it serves `{}` and this router `{model}`",
                record.model
            )),
            _ => None,
        }
    }
}

/// Connect to one worker and keep it in the router while connected; when `left`, take it
/// out of the router and end.
async fn keep_connected(
    record: WorkerRecord,
    router: RouterService,
    reports: mpsc::Sender<Followed>,
    (reconnect, connections): (Duration, usize),
    left: CancellationToken,
) {
    // Report an outage once, not at every attempt.
    let mut reported = false;
    loop {
        let attempt = tokio::select! {
            attempt = RemoteEngine::connect_pooled(record.address, connections) => attempt,
            () = left.cancelled() => return,
        };
        let error = match attempt {
            Ok(engine) => {
                router.insert_worker(record.id, engine.clone());
                reported = false;
                let _ = reports.send(Followed::Connected(record.clone())).await;
                let departed = tokio::select! {
                    () = engine.closed() => false,
                    () = left.cancelled() => true,
                };
                router.remove_worker(record.id);
                if departed {
                    return;
                }
                Error::unavailable(format!("the connection to {} was lost", record.address))
            }
            Err(error) => error,
        };
        if !reported {
            reported = true;
            let report = Followed::Unreachable {
                id: record.id,
                address: record.address,
                error,
            };
            let _ = reports.send(report).await;
        }
        tokio::select! {
            () = tokio::time::sleep(reconnect) => {}
            () = left.cancelled() => return,
        }
    }
}
