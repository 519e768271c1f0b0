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
//! changes, and reads `size` every step). A worker that cannot start, or dies at once, is
//! tried again at each step, and each try is logged. Dropping the scaler kills the workers left
//! (SIGKILL);
//! [`LocalProcesses::shutdown`] stops them gracefully first.

mod membership;
mod template;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dynamo_core::WorkerRole;
use futures::future::BoxFuture;
use tokio::process::Child;

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
}

#[derive(Debug)]
struct Worker {
    id: u64,
    child: Child,
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

    /// The workers of `pool` that were stopped and have not exited yet (reaping those that
    /// have).
    pub fn draining(&self, pool: WorkerRole) -> usize {
        let mut state = self.lock();
        state
            .pools
            .iter_mut()
            .find(|p| p.role == pool)
            .map_or(0, |pool| {
                pool.reap();
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

/// The `role` pool of `pools`.
fn find(pools: &mut [Pool], role: WorkerRole) -> Result<&mut Pool, Error> {
    pools
        .iter_mut()
        .find(|pool| pool.role == role)
        .ok_or_else(|| Error::Scale {
            pool: role,
            message: "no worker template for this pool".to_owned(),
            source: None,
        })
}

impl Pool {
    /// Forget the workers that have exited, logging how.
    fn reap(&mut self) {
        let role = self.role;
        self.serving.retain_mut(|worker| match worker.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                tracing::warn!(pool = %role, worker = worker.id, %status, "worker exited by itself");
                false
            }
            Err(error) => {
                tracing::warn!(pool = %role, worker = worker.id, %error, "worker cannot be waited on");
                false
            }
        });
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
            let State { next_id, pools } = &mut *state;
            let pool = find(pools, pool)?;
            pool.reap();
            if let Err(error) = pool.start(pool.desired, next_id) {
                // The size is still known; the next call tries again.
                tracing::warn!(pool = %pool.role, %error, "cannot replace an exited worker");
            }
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
            let State { next_id, pools } = &mut *state;
            let pool = find(pools, pool)?;
            pool.reap();
            pool.desired = replicas;
            while pool.serving.len() > replicas {
                // The newest first: the oldest have the warmest caches.
                let Some(mut worker) = pool.serving.pop() else {
                    break;
                };
                terminate(pool.role, &mut worker);
                pool.draining.push(worker);
            }
            pool.start(replicas, next_id)
        })
    }
}

impl Pool {
    /// Start workers until `replicas` serve, numbering them from `next_id`.
    fn start(&mut self, replicas: usize, next_id: &mut u64) -> Result<(), Error> {
        while self.serving.len() < replicas {
            let id = *next_id;
            let failed = |error: std::io::Error| Error::Scale {
                pool: self.role,
                message: format!("cannot start worker {id}"),
                source: Some(error.into()),
            };
            let child = self
                .template
                .command(self.role, id)
                .and_then(|mut command| command.spawn())
                .map_err(failed)?;
            *next_id += 1;
            tracing::info!(pool = %self.role, worker = id, pid = child.id(), "started worker");
            self.serving.push(Worker { id, child });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
