//! Discovery: which workers exist, as a stream of joins and departures.
//!
//! A worker registers a [`WorkerRecord`] (its id, its request-plane address, its model and
//! block size) with a registry; a router [`watch`](Discovery::watch)es the registry and connects
//! to each worker that joins ([`follow`] does that for a [`RouterService`]). Three registries:
//!
//! | registry | registration | a dead worker leaves when |
//! |---|---|---|
//! | [`StaticDiscovery`] | a fixed list, given to the router | never |
//! | [`DirectoryDiscovery`] | one JSON file per worker in a shared directory ([`DirectoryRegistration`]) | its file is removed |
//! | [`EtcdDiscovery`] | a key under a lease that the worker keeps alive ([`EtcdRegistration`]) | its lease expires (the TTL) |
//!
//! The membership stream starts with a [`Membership::Joined`] for every worker registered now,
//! then reports changes until it is dropped. An item that is an error (a malformed record, the
//! registry out of reach for a while) does not end the stream: the watcher carries on and
//! resynchronises, and says so in the error.
//!
//! [`RouterService`]: dynamo_router::RouterService

mod directory;
mod etcd;
mod follow;

use std::net::SocketAddr;
use std::pin::Pin;

use dynamo_core::WorkerId;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

pub use directory::{DirectoryDiscovery, DirectoryRegistration};
pub use etcd::{EtcdDiscovery, EtcdRegistration};
pub use follow::{FollowConfig, Followed, follow};

/// What a worker tells the registry about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker's id; unique within a deployment.
    pub id: WorkerId,
    /// Where it serves its engine ([`crate::tcp::serve`]).
    pub address: SocketAddr,
    /// The model it serves.
    pub model: String,
    /// The KV block size of its engine; a router with another block size refuses the worker.
    pub block_size: u32,
}

/// A change in the set of workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// A worker registered (or changed its record: then it comes again with the new one).
    Joined(WorkerRecord),
    /// A worker deregistered, or its registration expired.
    Left(WorkerId),
}

/// Why a registry could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A record in the registry is not a [`WorkerRecord`]; it is skipped.
    #[error("{origin} is not a worker record: {reason}")]
    BadRecord {
        /// Where it was: a file, an etcd key.
        origin: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The registry cannot be reached or refused the operation.
    #[error("the registry at {registry} is unavailable: {reason}")]
    Unavailable {
        /// The registry: a directory, an etcd endpoint.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry's address is not one this client can use.
    #[error("{0} is not a registry address this client can use (expected http://HOST:PORT)")]
    BadEndpoint(String),
}

/// A boxed stream of membership changes.
pub type MembershipStream =
    Pin<Box<dyn Stream<Item = Result<Membership, DiscoveryError>> + Send + 'static>>;

/// A registry of workers that can be watched.
pub trait Discovery: Send + Sync + 'static {
    /// The workers registered now, as [`Membership::Joined`], then every change, until the
    /// stream is dropped.
    fn watch(&self) -> MembershipStream;
}

/// A fixed list of workers: they join once and never leave.
///
/// ```
/// use dynamo_core::WorkerId;
/// use dynamo_transport::discovery::{Discovery, Membership, StaticDiscovery, WorkerRecord};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let record = WorkerRecord {
///     id: WorkerId::new(1),
///     address: "127.0.0.1:9000".parse().unwrap(),
///     model: "smollm2".into(),
///     block_size: 16,
/// };
/// let mut changes = StaticDiscovery::new(vec![record.clone()]).watch();
/// assert_eq!(changes.next().await.unwrap().unwrap(), Membership::Joined(record));
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    workers: Vec<WorkerRecord>,
}

impl StaticDiscovery {
    /// These workers, for good.
    pub fn new(workers: Vec<WorkerRecord>) -> Self {
        StaticDiscovery { workers }
    }
}

impl Discovery for StaticDiscovery {
    fn watch(&self) -> MembershipStream {
        let joined = self
            .workers
            .clone()
            .into_iter()
            .map(|record| Ok(Membership::Joined(record)));
        // The list never changes, so the stream stays open rather than ending.
        Box::pin(futures::stream::iter(joined).chain(futures::stream::pending()))
    }
}
