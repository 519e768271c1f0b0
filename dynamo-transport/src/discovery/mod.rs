//! Discovery: which workers exist, as a stream of joins and departures.
//!
//! A worker registers a [`WorkerRecord`] (its id, its request-plane address, its model, block
//! size and role, and the layout of its KV blocks when it hands them over) with a registry; a router [`watch`](Discovery::watch)es the registry, and
//! [`connect`] turns what it sees into a [`tower::discover::Discover`] of worker engines,
//! reached through any [`Transport`](crate::Transport), that a router service consumes
//! (`dynamo_router::RouterService::discover`). Four registries:
//!
//! | registry | registration | a dead worker leaves when |
//! |---|---|---|
//! | [`StaticDiscovery`] | a fixed list, given to the router | never |
//! | [`DirectoryDiscovery`] | one JSON file per worker in a shared directory ([`DirectoryRegistration`]) | its file is removed |
//! | `EtcdDiscovery` (feature `etcd`) | a key under a lease that the worker keeps alive (`EtcdRegistration`) | its lease expires (the TTL) |
//! | `KubernetesRegistry` (feature `kube`) | a Kubernetes Lease that the worker renews (`KubernetesRegistration`) | no renewal is seen for the Lease's duration, or the Lease is deleted (with its pod, when the pod owns it) |
//!
//! Membership speaks tower's vocabulary: the stream starts with a [`Change::Insert`] for every
//! worker registered now, then reports changes (a record that changes comes as a `Remove` and
//! an `Insert`) until it is dropped. An item that is an error (a malformed record,
//! [`Error::BadRecord`]; the registry out of reach for a while, [`Error::RegistryUnavailable`])
//! does not end the stream: the watcher carries on and resynchronises, and says so in the
//! error.

mod connect;
mod directory;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "kube")]
mod kubernetes;

use std::pin::Pin;

use dynamo_core::{KvLayout, WorkerId, WorkerRole};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tower::discover::Change;

use crate::Error;

pub use connect::{ConnectConfig, Connected, connect};
pub use directory::{DirectoryDiscovery, DirectoryRegistration};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdAccess, EtcdDiscovery, EtcdRegistration};
#[cfg(feature = "kube")]
pub use kubernetes::{KubernetesRegistration, KubernetesRegistry};

/// What a worker tells the registry about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker's id; unique within a deployment.
    pub id: WorkerId,
    /// Where it serves its engine: an address of the deployment's
    /// [`Transport`](crate::Transport) (`HOST:PORT` for [`Tcp`](crate::Tcp)).
    pub address: String,
    /// The model it serves.
    pub model: String,
    /// The KV block size of its engine; a router with another block size refuses the worker.
    pub block_size: u32,
    /// What it does: aggregated (the default, and what a record without the field means),
    /// prefill or decode.
    #[serde(default)]
    pub role: WorkerRole,
    /// How its KV blocks are laid out, for workers that hand blocks over (prefill and decode);
    /// a disaggregated router refuses a worker whose layout does not pair with its pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_layout: Option<KvLayout>,
}

/// Decode a worker's record as a registry holds it (one JSON document), found at `origin` (a
/// file, an etcd key).
///
/// Public (hidden) so that the fuzz targets in `fuzz/` and the corpus replay test reach the
/// decoder the registries use.
///
/// # Errors
///
/// [`Error::BadRecord`] naming `origin` when the bytes are not a record.
#[doc(hidden)]
pub fn decode_record(origin: &str, bytes: &[u8]) -> Result<WorkerRecord, Error> {
    serde_json::from_slice(bytes).map_err(|error| Error::BadRecord {
        origin: origin.to_owned(),
        reason: error.to_string(),
    })
}

/// A change in the set of registered workers.
pub type WorkerChange = Change<WorkerId, WorkerRecord>;

/// A boxed stream of membership changes. Its errors ([`Error::BadRecord`],
/// [`Error::RegistryUnavailable`]) do not end it.
pub type MembershipStream =
    Pin<Box<dyn Stream<Item = Result<WorkerChange, Error>> + Send + 'static>>;

/// Membership changes buffered for a slow consumer before a registry's watcher waits for it.
#[cfg(any(feature = "etcd", feature = "kube"))]
const CHANGES: usize = 256;

/// The consumer of a watch is gone; its watcher stops.
#[cfg(any(feature = "etcd", feature = "kube"))]
struct Gone;

/// Runs the watcher that `watch` makes, on a task, sending into the returned stream (at most
/// [`CHANGES`] changes ahead of its consumer), until the watcher returns or the stream is
/// dropped.
#[cfg(any(feature = "etcd", feature = "kube"))]
fn spawn_watcher<W>(
    watch: impl FnOnce(tokio::sync::mpsc::Sender<Result<WorkerChange, Error>>) -> W,
) -> MembershipStream
where
    W: std::future::Future<Output = ()> + Send + 'static,
{
    let (changes, mut received) = tokio::sync::mpsc::channel(CHANGES);
    let closed = changes.clone();
    let watching = watch(changes);
    tokio::spawn(async move {
        tokio::select! {
            () = watching => {}
            () = closed.closed() => {}
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| received.poll_recv(cx)))
}

/// A registry of workers that can be watched.
pub trait Discovery: Send + Sync + 'static {
    /// The workers registered now, as [`Change::Insert`]s, then every change, until the
    /// stream is dropped.
    fn watch(&self) -> MembershipStream;
}

/// A fixed list of workers: they join once and never leave.
///
/// ```
/// use dynamo_core::{WorkerId, WorkerRole};
/// use dynamo_transport::discovery::{Discovery, StaticDiscovery, WorkerRecord};
/// use futures::StreamExt;
/// use tower::discover::Change;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let record = WorkerRecord {
///     id: WorkerId::new(1),
///     address: "127.0.0.1:9000".into(),
///     model: "smollm2".into(),
///     block_size: 16,
///     role: WorkerRole::Aggregated,
///     kv_layout: None,
/// };
/// let mut changes = StaticDiscovery::new(vec![record.clone()]).watch();
/// let Change::Insert(id, joined) = changes.next().await.unwrap().unwrap() else { panic!() };
/// assert_eq!((id, joined), (record.id, record));
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
            .map(|record| Ok(Change::Insert(record.id, record)));
        // The list never changes, so the stream stays open rather than ending.
        Box::pin(futures::stream::iter(joined).chain(futures::stream::pending()))
    }
}
