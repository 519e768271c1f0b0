//! Workers registered as Kubernetes Leases, watched through the API server.
//!
//! A Lease (`coordination.k8s.io/v1`) is Kubernetes' own heartbeat object: kubelets renew one
//! per node, and leader elections hold one. Here each worker keeps one in the namespace,
//! labelled `dynamo/deployment=NAME`, with its [`WorkerRecord`] as JSON in the annotation
//! `dynamo/worker-record`, and renews it every third of its duration. Nothing is installed in
//! the cluster for it (no custom resource, no operator), and the rights it needs are a Role's
//! on `leases`: `list` and `watch` to discover; `create`, `patch` and `delete` to register.
//!
//! A worker leaves when its Lease is deleted (the worker deregisters; or its pod is deleted and
//! the Lease was owned by the pod) or when the watcher has seen no renewal for the Lease's
//! duration. The watcher times renewals by its own clock, from when it sees them, so the
//! clocks of the worker's and the watcher's machines need not agree; only a Lease seen for the
//! first time is aged by comparing its `renewTime` with the watcher's clock, so that a Lease
//! left behind by a dead worker is not taken for a live one.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, WatchEvent, WatchParams,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::discover::Change;

use super::{
    Discovery, Gone, MembershipStream, WorkerChange, WorkerRecord, decode_record, spawn_watcher,
};
use crate::Error;

/// The label that names a Lease's deployment.
const DEPLOYMENT_LABEL: &str = "dynamo/deployment";
/// The annotation that holds a Lease's worker record.
const RECORD_ANNOTATION: &str = "dynamo/worker-record";
/// The field manager of a worker's writes (server-side apply).
const FIELD_MANAGER: &str = "dynamo-worker";
/// How long the watcher waits before it lists again after losing the API server.
const RETRY: Duration = Duration::from_millis(500);
/// How long one watch request lasts before the watcher renews it (the API server's own limit
/// is longer; kube's default is 290 s).
const WATCH_SECONDS: u32 = 290;

/// Where workers register in Kubernetes: the Leases of one namespace labelled with one
/// deployment's name.
///
/// It is the registry on both sides: [`watch`](Discovery::watch) it to follow the workers, and
/// [`register`](Self::register) a worker in it.
///
/// ```no_run
/// use std::time::Duration;
///
/// use dynamo_transport::discovery::{Discovery, KubernetesRegistry};
///
/// # async fn example(record: dynamo_transport::discovery::WorkerRecord)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// // Configured as kubectl is: KUBECONFIG, ~/.kube/config, or the pod's service account.
/// let client = kube::Client::try_default().await?;
/// let registry = KubernetesRegistry::in_default_namespace(client, "llama")?;
/// let registration = registry.register(&record, Duration::from_secs(10)).await?;
/// let mut workers = registry.watch(); // joins and departures, as with etcd
/// registration.deregister().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubernetesRegistry {
    leases: Api<Lease>,
    namespace: String,
    deployment: String,
    owner: Option<OwnerReference>,
}

impl std::fmt::Debug for KubernetesRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRegistry")
            .field("namespace", &self.namespace)
            .field("deployment", &self.deployment)
            .field("owner", &self.owner.as_ref().map(|owner| &owner.name))
            .finish_non_exhaustive()
    }
}

impl KubernetesRegistry {
    /// The workers of `deployment` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::BadDeploymentName`] when `deployment` cannot be a label value and part of a
    /// Lease's name: it must be 1 to 63 lowercase letters, digits and `-`, starting and ending
    /// with a letter or digit.
    pub fn new(client: kube::Client, namespace: &str, deployment: &str) -> Result<Self, Error> {
        check_deployment_name(deployment)?;
        Ok(KubernetesRegistry {
            leases: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            deployment: deployment.to_owned(),
            owner: None,
        })
    }

    /// The workers of `deployment` in the client's namespace: the kubeconfig context's, or
    /// the pod's for a client configured from its service account.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn in_default_namespace(client: kube::Client, deployment: &str) -> Result<Self, Error> {
        let namespace = client.default_namespace().to_owned();
        Self::new(client, &namespace, deployment)
    }

    /// Make the pod named `pod` (whose uid is `uid`) the owner of the Leases this registry
    /// [`register`](Self::register)s, so that Kubernetes' garbage collector deletes a worker's
    /// Lease with its pod, and watchers see the worker leave then rather than a lease duration
    /// later. A pod learns its own name and uid through the downward API
    /// (`metadata.name`, `metadata.uid`).
    pub fn owned_by_pod(mut self, pod: &str, uid: &str) -> Self {
        self.owner = Some(OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            name: pod.to_owned(),
            uid: uid.to_owned(),
            ..OwnerReference::default()
        });
        self
    }

    /// The namespace the Leases are in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Register `record` as a Lease of `ttl` (whole seconds, at least one), renewed every third
    /// of it by a background task until the registration is deregistered or dropped.
    ///
    /// A Lease left by an earlier worker with the same id is taken over.
    ///
    /// # Errors
    ///
    /// [`Error::RegistryUnavailable`] when the API server cannot be reached or refuses the
    /// Lease (a missing right, a namespace that does not exist).
    pub async fn register(
        &self,
        record: &WorkerRecord,
        ttl: Duration,
    ) -> Result<KubernetesRegistration, Error> {
        let seconds = ttl.as_secs().clamp(1, i32::MAX as u64);
        let name = format!(
            "{}-worker-{}-{}",
            self.deployment, record.id.worker, record.id.dp_rank
        );
        let json = serde_json::to_string(record).map_err(|error| Error::BadRecord {
            origin: lease_origin(&self.namespace, &name),
            reason: error.to_string(),
        })?;
        let acquired = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(DEPLOYMENT_LABEL.to_owned(), self.deployment.clone())].into()),
                annotations: Some([(RECORD_ANNOTATION.to_owned(), json)].into()),
                owner_references: self.owner.clone().map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(record.id.to_string()),
                lease_duration_seconds: Some(seconds as i32),
                acquire_time: Some(acquired.clone()),
                renew_time: Some(acquired),
                ..LeaseSpec::default()
            }),
        };
        let renewer = Renewer {
            leases: self.leases.clone(),
            name,
            lease,
            origin: self.origin_of_registry(),
        };
        renewer.renew().await?;
        let every = Duration::from_secs(seconds) / 3;
        let leases = self.leases.clone();
        let name = renewer.name.clone();
        let keeper = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = renewer.renew().await {
                    tracing::warn!(lease = %renewer.name, %error, "could not renew the worker's Lease; trying again");
                }
            }
        });
        Ok(KubernetesRegistration {
            leases,
            origin: lease_origin(&self.namespace, &name),
            name,
            keeper,
        })
    }

    fn origin_of_registry(&self) -> String {
        format!(
            "Kubernetes Leases {DEPLOYMENT_LABEL}={} in namespace {}",
            self.deployment, self.namespace
        )
    }
}

/// How errors name one Lease.
fn lease_origin(namespace: &str, name: &str) -> String {
    format!("Lease {namespace}/{name}")
}

/// The deployment's name is a label value and the start of Lease names (DNS subdomains).
fn check_deployment_name(name: &str) -> Result<(), Error> {
    let fits = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if fits {
        Ok(())
    } else {
        Err(Error::BadDeploymentName {
            name: name.to_owned(),
        })
    }
}

/// Writes a worker's Lease with a fresh `renewTime`: created if it is missing (deleted by
/// someone, or never written), replaced otherwise.
struct Renewer {
    leases: Api<Lease>,
    name: String,
    lease: Lease,
    origin: String,
}

impl Renewer {
    async fn renew(&self) -> Result<(), Error> {
        let mut lease = self.lease.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        self.leases
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map(drop)
            .map_err(|error| unavailable(&self.origin, &error))
    }
}

/// A worker's Lease, renewed by a background task.
///
/// [`deregister`](Self::deregister) deletes the Lease, and watchers see the worker leave at
/// once. Dropping the registration only stops the renewals: watchers see the worker leave a
/// lease duration later (or when its pod is deleted, if the registry made the pod its owner).
#[derive(Debug)]
pub struct KubernetesRegistration {
    leases: Api<Lease>,
    name: String,
    /// How errors name the Lease.
    origin: String,
    keeper: JoinHandle<()>,
}

impl KubernetesRegistration {
    /// The Lease's name.
    pub fn lease_name(&self) -> &str {
        &self.name
    }

    /// Stop renewing and delete the Lease.
    ///
    /// # Errors
    ///
    /// [`Error::RegistryUnavailable`] when the API server cannot be reached or refuses; the
    /// Lease then lapses after its duration. A Lease already gone is not an error.
    pub async fn deregister(self) -> Result<(), Error> {
        self.keeper.abort();
        match self
            .leases
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(unavailable(&self.origin, &error)),
        }
    }
}

impl Drop for KubernetesRegistration {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn unavailable(registry: &str, error: &kube::Error) -> Error {
    Error::RegistryUnavailable {
        registry: registry.to_owned(),
        reason: error.to_string(),
    }
}

impl Discovery for KubernetesRegistry {
    fn watch(&self) -> MembershipStream {
        spawn_watcher(|changes| {
            Watcher {
                leases: self.leases.clone(),
                selector: format!("{DEPLOYMENT_LABEL}={}", self.deployment),
                namespace: self.namespace.clone(),
                registry: self.origin_of_registry(),
                known: HashMap::new(),
                reported_bad: HashMap::new(),
                changes,
            }
            .run()
        })
    }
}

/// What the watcher knows of one Lease.
struct Tracked {
    record: WorkerRecord,
    /// The last `renewTime` seen.
    renewed: Option<Timestamp>,
    /// When, by the watcher's clock, the Lease lapses unless renewed.
    lapses: Instant,
    /// Whether the worker has been reported as joined (and not since as departed).
    joined: bool,
}

/// The watcher's task: what it has reported, and where it reports.
struct Watcher {
    leases: Api<Lease>,
    selector: String,
    namespace: String,
    registry: String,
    /// The Leases seen, by name.
    known: HashMap<String, Tracked>,
    /// The annotation of each Lease reported as a bad record, so that its renewals do not
    /// report it again.
    reported_bad: HashMap<String, Option<String>>,
    changes: mpsc::Sender<Result<WorkerChange, Error>>,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let error = match self.list_and_watch().await {
                Ok(Some(error)) => error,
                Ok(None) => continue,
                Err(Gone) => return,
            };
            if self.send(Err(error)).await.is_err() {
                return;
            }
            // Lapses still happen while the API server is away.
            let retry = Instant::now() + RETRY;
            loop {
                let lapse = self.next_lapse().filter(|&lapse| lapse < retry);
                tokio::time::sleep_until(lapse.unwrap_or(retry)).await;
                if self.lapse_due().await.is_err() {
                    return;
                }
                if lapse.is_none() {
                    break;
                }
            }
        }
    }

    /// List the Leases, report the difference, then follow watches from that version until
    /// one fails; the error says why. A watch that ends (the API server's timeout) is renewed
    /// from the last version seen; one whose version has expired (410) ends without an error,
    /// to list again at once.
    async fn list_and_watch(&mut self) -> Result<Option<Error>, Gone> {
        let listed = match self
            .leases
            .list(&ListParams::default().labels(&self.selector))
            .await
        {
            Ok(listed) => listed,
            Err(error) => return Ok(Some(unavailable(&self.registry, &error))),
        };
        let present: Vec<String> = listed
            .items
            .iter()
            .filter_map(|lease| lease.metadata.name.clone())
            .collect();
        let departed: Vec<String> = self
            .known
            .keys()
            .filter(|name| !present.contains(name))
            .cloned()
            .collect();
        for name in departed {
            self.forget(&name).await?;
        }
        for lease in &listed.items {
            self.observe(lease).await?;
        }
        let mut version = listed.metadata.resource_version.unwrap_or_default();
        loop {
            let params = WatchParams::default()
                .labels(&self.selector)
                .timeout(WATCH_SECONDS);
            let events = match self.leases.watch(&params, &version).await {
                Ok(events) => events,
                Err(error) => return Ok(Some(unavailable(&self.registry, &error))),
            };
            match self.follow(events, &mut version).await? {
                Ended::Timeout => continue,
                Ended::Expired => return Ok(None),
                Ended::Failed(error) => return Ok(Some(error)),
            }
        }
    }

    /// Apply one watch's events, and the lapses due meanwhile, until it ends.
    async fn follow(
        &mut self,
        events: impl Stream<Item = Result<WatchEvent<Lease>, kube::Error>>,
        version: &mut String,
    ) -> Result<Ended, Gone> {
        let mut events = std::pin::pin!(events);
        loop {
            let lapse = self.next_lapse();
            let event = tokio::select! {
                event = events.next() => event,
                () = sleep_until(lapse) => {
                    self.lapse_due().await?;
                    continue;
                }
            };
            let event = match event {
                None => return Ok(Ended::Timeout),
                Some(Err(error)) => return Ok(Ended::Failed(unavailable(&self.registry, &error))),
                Some(Ok(event)) => event,
            };
            match event {
                WatchEvent::Added(lease) | WatchEvent::Modified(lease) => {
                    remember_version(version, &lease);
                    self.observe(&lease).await?;
                }
                WatchEvent::Deleted(lease) => {
                    remember_version(version, &lease);
                    if let Some(name) = &lease.metadata.name {
                        self.forget(name).await?;
                    }
                }
                WatchEvent::Bookmark(bookmark) => {
                    *version = bookmark.metadata.resource_version;
                }
                WatchEvent::Error(status) if status.code == 410 => return Ok(Ended::Expired),
                WatchEvent::Error(status) => {
                    return Ok(Ended::Failed(Error::RegistryUnavailable {
                        registry: self.registry.clone(),
                        reason: format!("watch: {} ({})", status.message, status.code),
                    }));
                }
            }
        }
    }

    /// Take in a Lease as it is now: a join, a renewal, a changed record or a bad one.
    async fn observe(&mut self, lease: &Lease) -> Result<(), Gone> {
        let Some(name) = lease.metadata.name.clone() else {
            return Ok(());
        };
        let annotation = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(RECORD_ANNOTATION));
        let spec = lease.spec.as_ref();
        let duration = spec
            .and_then(|spec| spec.lease_duration_seconds)
            .filter(|&seconds| seconds > 0);
        let origin = lease_origin(&self.namespace, &name);
        let parsed = match (annotation, duration) {
            (None, _) => Err(Error::BadRecord {
                origin,
                reason: format!("no annotation {RECORD_ANNOTATION}"),
            }),
            (Some(_), None) => Err(Error::BadRecord {
                origin,
                reason: "no positive spec.leaseDurationSeconds".to_owned(),
            }),
            (Some(json), Some(seconds)) => decode_record(&origin, json.as_bytes())
                .map(|record| (record, Duration::from_secs(seconds as u64))),
        };
        let (record, duration) = match parsed {
            Ok(parsed) => {
                self.reported_bad.remove(&name);
                parsed
            }
            Err(error) => {
                self.depart(&name).await?;
                if self.reported_bad.get(&name) != Some(&annotation.cloned()) {
                    self.reported_bad.insert(name, annotation.cloned());
                    self.send(Err(error)).await?;
                }
                return Ok(());
            }
        };
        let renewed = spec
            .and_then(|spec| spec.renew_time.as_ref().or(spec.acquire_time.as_ref()))
            .map(|time| time.0);
        let now = Instant::now();
        let lapses = match self.known.get(&name) {
            Some(tracked) if tracked.renewed == renewed => tracked.lapses,
            // A renewal seen now.
            Some(_) => now + duration,
            // Seen for the first time: aged by the clocks.
            None => {
                let age = renewed
                    .and_then(|renewed| {
                        Duration::try_from(Timestamp::now().duration_since(renewed)).ok()
                    })
                    .unwrap_or_default();
                now + duration.saturating_sub(age)
            }
        };
        let mut tracked = Tracked {
            record,
            renewed,
            lapses,
            joined: false,
        };
        match self.known.remove(&name) {
            Some(old) if old.joined && old.record == tracked.record => tracked.joined = true,
            Some(old) if old.joined => self.send(Ok(Change::Remove(old.record.id))).await?,
            _ => {}
        }
        if !tracked.joined && tracked.lapses > now {
            tracked.joined = true;
            self.send(Ok(Change::Insert(
                tracked.record.id,
                tracked.record.clone(),
            )))
            .await?;
        }
        self.known.insert(name, tracked);
        Ok(())
    }

    /// A Lease deleted (or no longer listed): its worker leaves.
    async fn forget(&mut self, name: &str) -> Result<(), Gone> {
        self.reported_bad.remove(name);
        self.depart(name).await
    }

    /// The Lease's worker leaves, if it had joined.
    async fn depart(&mut self, name: &str) -> Result<(), Gone> {
        match self.known.remove(name) {
            Some(old) if old.joined => self.send(Ok(Change::Remove(old.record.id))).await,
            _ => Ok(()),
        }
    }

    /// When the next joined worker's Lease lapses.
    fn next_lapse(&self) -> Option<Instant> {
        self.known
            .values()
            .filter(|tracked| tracked.joined)
            .map(|tracked| tracked.lapses)
            .min()
    }

    /// Report the workers whose Leases have lapsed as departed; they join again if renewed.
    async fn lapse_due(&mut self) -> Result<(), Gone> {
        let now = Instant::now();
        let mut lapsed = Vec::new();
        for tracked in self.known.values_mut() {
            if tracked.joined && tracked.lapses <= now {
                tracked.joined = false;
                lapsed.push(tracked.record.id);
            }
        }
        for id in lapsed {
            self.send(Ok(Change::Remove(id))).await?;
        }
        Ok(())
    }

    async fn send(&self, change: Result<WorkerChange, Error>) -> Result<(), Gone> {
        self.changes.send(change).await.map_err(|_| Gone)
    }
}

/// Why one watch request ended.
enum Ended {
    /// It ran its course: watch again from the last version.
    Timeout,
    /// Its version is too old (410 Gone): list again.
    Expired,
    /// The API server failed or refused.
    Failed(Error),
}

fn remember_version(version: &mut String, lease: &Lease) {
    if let Some(seen) = &lease.metadata.resource_version {
        version.clone_from(seen);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
