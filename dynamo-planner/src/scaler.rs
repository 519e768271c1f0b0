//! The [`Scaler`] trait: read and set the replica count of a worker pool.

use dynamo_core::WorkerRole;
use futures::future::BoxFuture;

use crate::Error;

/// A pool's size: what was asked for, and how many workers are ready to serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSize {
    /// Replicas asked for.
    pub desired: usize,
    /// Replicas that serve now (started and joined; not draining).
    pub ready: usize,
}

impl PoolSize {
    /// Whether the last change has taken effect.
    pub fn settled(self) -> bool {
        self.desired == self.ready
    }
}

/// Reads and sets the replica count of a deployment's worker pools.
///
/// [`scale`](Scaler::scale) returns once the change is asked for; [`size`](Scaler::size)
/// reports when it has taken effect (new workers ready, removed ones drained and gone).
pub trait Scaler: Send + Sync {
    /// The size of the `pool` pool.
    fn size(&self, pool: WorkerRole) -> BoxFuture<'_, Result<PoolSize, Error>>;

    /// Ask for `replicas` workers in the `pool` pool.
    fn scale(&self, pool: WorkerRole, replicas: usize) -> BoxFuture<'_, Result<(), Error>>;
}
