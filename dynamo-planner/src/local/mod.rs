//! A [`Scaler`] over worker processes on this machine: [`LocalProcesses`] starts a pool's
//! workers from a [`WorkerTemplate`] and stops them with SIGTERM, and counts them ready once
//! discovery ([`Membership`]) lists them.
//!
//! Scaling up spawns workers with fresh ids; scaling down sends SIGTERM to the newest ones.
//! `dynamo-serve worker` leaves discovery at once on SIGTERM, so the frontend routes nothing new
//! to it, and finishes its open streams (up to its `--drain-timeout`) before it exits: a
//! stopped worker stops counting as ready at once and loses none of its requests. Exited
//! workers are reaped, without blocking, inside [`size`](Scaler::size) and
//! [`scale`](Scaler::scale) calls and [`LocalProcesses::draining`]: the scaler runs no task of
//! its own. A worker that exits by itself stops counting, and the next `size` or `scale` call
//! starts a replacement, as a Deployment's controller would: the pool keeps its desired size
//! without the planner having to ask again (a planner asks for a size only when its target
//! changes, and reads `size` every step). A worker that cannot be spawned, or exits before
//! discovery lists it, is a failed start: the pool waits before it starts another, 10 seconds
//! doubling to 5 minutes ([`RestartBackoff`], a kubelet's crash-loop back-off), and each
//! failure and wait is logged; a worker that joins ends the back-off. A worker that exits
//! after it joined is replaced at the next call. Dropping the scaler kills the workers left
//! (SIGKILL); [`LocalProcesses::shutdown`] stops them gracefully first.

mod backoff;
mod listed;
mod membership;
mod template;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dynamo_core::WorkerRole;
use futures::future::BoxFuture;
use tokio::process::Child;
use tokio::time::Instant;

use backoff::Failures;
pub use backoff::RestartBackoff;
pub use listed::Listed;
pub use membership::{Membership, RegistryDirectory};
pub use template::WorkerTemplate;

use crate::{Error, PoolSize, Scaler};

/// Starts and stops local worker processes, one [`WorkerTemplate`] per pool.
///
/// ```no_run
/// # async fn run() -> Result<(), dynamo_planner::Error> {
/// use dynamo_core::WorkerRole;
/// use dynamo_planner::Scaler;
/// use dynamo_planner::local::{LocalProcesses, RegistryDirectory, WorkerTemplate};
///
/// let registry = "/tmp/dynamo-registry";
/// let workers = WorkerTemplate::new("dynamo-serve")
///     .args(["worker", "--engine", "mocker", "--registry", registry]);
/// let scaler = LocalProcesses::new(RegistryDirectory::new(registry))
///     .with_pool(WorkerRole::Aggregated, workers);
/// scaler.scale(WorkerRole::Aggregated, 2).await?;
/// // Later: ready reaches 2 once both workers have registered.
/// let size = scaler.size(WorkerRole::Aggregated).await?;
/// tracing::info!("{} of {} ready", size.ready, size.desired);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LocalProcesses {
    membership: Box<dyn Membership>,
    state: Mutex<State>,
}

/// The workers, under the scaler's lock (held only between awaits).
#[derive(Debug)]
struct State {
    next_id: u64,
    backoff: RestartBackoff,
    pools: Vec<Pool>,
}

/// One pool: its template, its target, its running and its stopping workers.
#[derive(Debug)]
struct Pool {
    role: WorkerRole,
    template: WorkerTemplate,
    desired: usize,
    /// Oldest first.
    serving: Vec<Worker>,
    /// Sent SIGTERM; not yet exited.
    draining: Vec<Worker>,
    /// Failed starts in a row, and the wait they impose.
    failures: Failures,
}

#[derive(Debug)]
struct Worker {
    id: u64,
    child: Child,
    /// Discovery has listed it: it started well.
    joined: bool,
}

impl std::fmt::Debug for dyn Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Membership")
    }
}

impl LocalProcesses {
    /// A scaler with no pools yet, counting workers ready once `membership` lists them.
    pub fn new(membership: impl Membership + 'static) -> Self {
        LocalProcesses {
            membership: Box::new(membership),
            state: Mutex::new(State {
                next_id: 1,
                backoff: RestartBackoff::default(),
                pools: Vec::new(),
            }),
        }
    }

    /// Start the `role` pool's workers from `template` (replacing any template it had).
    pub fn with_pool(self, role: WorkerRole, template: WorkerTemplate) -> Self {
        {
            let mut state = self.lock();
            state.pools.retain(|pool| pool.role != role);
            state.pools.push(Pool {
                role,
                template,
                desired: 0,
                serving: Vec::new(),
                draining: Vec::new(),
                failures: Failures::default(),
            });
        }
        self
    }

    /// Number the workers from `first` on (default 1), for example to keep clear of the ids of
    /// workers started otherwise.
    pub fn with_first_id(self, first: u64) -> Self {
        self.lock().next_id = first;
        self
    }

    /// Space the tries after failed starts by `backoff` (default: 10 seconds doubling to 5
    /// minutes).
    pub fn with_restart_backoff(self, backoff: RestartBackoff) -> Self {
        self.lock().backoff = backoff;
        self
    }

    /// The workers of `pool` that were stopped and have not exited yet (reaping those that
    /// have).
    pub fn draining(&self, pool: WorkerRole) -> usize {
        self.lock().pool(pool).map_or(0, |(pool, _, backoff)| {
            pool.reap(backoff);
            pool.draining.len()
        })
    }

    /// Stop every worker with SIGTERM, wait up to `grace` for them to exit, and kill those
    /// left. Every pool's desired size becomes 0.
    ///
    /// Cancel safety: dropping the future before it ends kills the workers not yet exited.
    pub async fn shutdown(&self, grace: Duration) {
        let mut stopping = Vec::new();
        for pool in &mut self.lock().pools {
            pool.desired = 0;
            for mut worker in pool.serving.drain(..).chain(pool.draining.drain(..)) {
                terminate(pool.role, &mut worker);
                stopping.push(worker);
            }
        }
        let exits = futures::future::join_all(stopping.iter_mut().map(|w| w.child.wait()));
        if tokio::time::timeout(grace, exits).await.is_err() {
            tracing::warn!(grace = ?grace, "workers still running after the grace period; killing them");
            for worker in &mut stopping {
                let _ = worker.child.kill().await;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The `role` pool, with the id counter and the back-off its starts go by.
    fn pool(&mut self, role: WorkerRole) -> Result<(&mut Pool, &mut u64, RestartBackoff), Error> {
        let pool = self
            .pools
            .iter_mut()
            .find(|pool| pool.role == role)
            .ok_or_else(|| Error::Scale {
                pool: role,
                message: "no worker template for this pool".to_owned(),
                source: None,
            })?;
        Ok((pool, &mut self.next_id, self.backoff))
    }
}

impl Pool {
    /// Forget the workers that have exited, logging how; one that exited before it joined is a
    /// failed start.
    fn reap(&mut self, backoff: RestartBackoff) {
        let role = self.role;
        let mut failed_start = false;
        self.serving.retain_mut(|worker| {
            let exit = match worker.child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => status.to_string(),
                Err(error) => format!("cannot be waited on: {error}"),
            };
            if worker.joined {
                tracing::warn!(pool = %role, worker = worker.id, %exit, "worker exited by itself");
            } else {
                tracing::warn!(pool = %role, worker = worker.id, %exit, "worker exited before it joined");
                failed_start = true;
            }
            false
        });
        if failed_start {
            self.failed(backoff);
        }
        self.draining.retain_mut(|worker| match worker.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::info!(pool = %role, worker = worker.id, %status, "stopped worker exited");
                false
            }
            Err(_) => false,
        });
    }
}

/// Ask `worker` to stop: SIGTERM, which `dynamo-serve worker` answers by leaving discovery and
/// draining. Only called on a worker not yet reaped, so its pid is still its own.
fn terminate(role: WorkerRole, worker: &mut Worker) {
    let pid = worker
        .child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    let Some(pid) = pid else { return };
    match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        Ok(()) => tracing::info!(pool = %role, worker = worker.id, "stopping worker (SIGTERM)"),
        Err(error) => {
            tracing::warn!(pool = %role, worker = worker.id, %error, "cannot send SIGTERM");
        }
    }
}

impl Scaler for LocalProcesses {
    fn size(&self, pool: WorkerRole) -> BoxFuture<'_, Result<PoolSize, Error>> {
        Box::pin(async move {
            let listed = self.membership.members(pool).await?;
            let mut state = self.lock();
            let (pool, next_id, backoff) = state.pool(pool)?;
            for worker in &mut pool.serving {
                if !worker.joined && listed.iter().any(|id| id.worker == worker.id) {
                    worker.joined = true;
                    pool.failures.succeeded();
                }
            }
            pool.reap(backoff);
            if let Err(error) = pool.start(pool.desired, next_id, backoff) {
                // The size is still known; a later call tries again.
                tracing::warn!(pool = %pool.role, %error, "cannot replace an exited worker");
            }
            // Ready is listed now: a worker that left discovery while it runs stops counting.
            let ready = pool
                .serving
                .iter()
                .filter(|worker| listed.iter().any(|id| id.worker == worker.id))
                .count();
            Ok(PoolSize {
                desired: pool.desired,
                ready,
            })
        })
    }

    fn scale(&self, pool: WorkerRole, replicas: usize) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut state = self.lock();
            let (pool, next_id, backoff) = state.pool(pool)?;
            pool.reap(backoff);
            pool.desired = replicas;
            while pool.serving.len() > replicas {
                // The newest first: the oldest have the warmest caches.
                let Some(mut worker) = pool.serving.pop() else {
                    break;
                };
                terminate(pool.role, &mut worker);
                pool.draining.push(worker);
            }
            pool.start(replicas, next_id, backoff)
        })
    }
}

impl Pool {
    /// Start workers until `replicas` serve, numbering them from `next_id`, unless the pool is
    /// waiting after a failed start (then a later call starts them).
    fn start(
        &mut self,
        replicas: usize,
        next_id: &mut u64,
        backoff: RestartBackoff,
    ) -> Result<(), Error> {
        if self.serving.len() < replicas
            && let Some(left) = self.failures.waiting(Instant::now())
        {
            tracing::debug!(pool = %self.role, wait = ?left, "waiting after a failed start");
            return Ok(());
        }
        while self.serving.len() < replicas {
            let id = *next_id;
            let spawned = self
                .template
                .command(self.role, id)
                .and_then(|mut command| command.spawn());
            let child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    self.failed(backoff);
                    return Err(Error::Scale {
                        pool: self.role,
                        message: format!("cannot start worker {id}"),
                        source: Some(error.into()),
                    });
                }
            };
            *next_id += 1;
            tracing::info!(pool = %self.role, worker = id, pid = child.id(), "started worker");
            self.serving.push(Worker {
                id,
                child,
                joined: false,
            });
        }
        Ok(())
    }

    /// Count a failed start: the pool waits before its next.
    fn failed(&mut self, backoff: RestartBackoff) {
        if let Some(wait) = self.failures.failed(&backoff, Instant::now()) {
            tracing::warn!(pool = %self.role, wait = ?wait, "a worker failed to start; waiting before the next");
        }
    }
}

#[cfg(test)]
mod tests;
