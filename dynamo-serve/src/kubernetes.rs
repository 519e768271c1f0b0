//! `--kubernetes-discovery`: workers register as Kubernetes Leases, and frontends and planners
//! watch them (`dynamo_transport::discovery::KubernetesRegistry`), behind the `kube` feature.
//!
//! The Leases are those of the `--kubernetes-namespace` (else the client's: the kubeconfig
//! context's, or the pod's) labelled `dynamo/deployment=` the `--namespace`. The client is
//! configured as kubectl's is. A worker whose pod gives it `POD_NAME` and `POD_UID` (the
//! downward API) makes its pod the owner of its Lease, so that the Lease goes with the pod.

use std::time::Duration;

use dynamo_transport::discovery::{Discovery, WorkerRecord};

use crate::options::Options;

/// Why `--kubernetes-discovery` is refused by a `dynamo-serve` built without the `kube` feature.
pub(crate) const WITHOUT_KUBE: &str = "--kubernetes-discovery needs a dynamo-serve built with \
    the kube feature: cargo build --release -p dynamo-serve --features kube";

/// A worker's Lease, renewed until it is deregistered.
#[cfg(feature = "kube")]
pub(crate) type Registration = dynamo_transport::discovery::KubernetesRegistration;
/// Without the `kube` feature nothing registers in Kubernetes.
#[cfg(not(feature = "kube"))]
pub(crate) type Registration = std::convert::Infallible;

/// The registry of `options`.
#[cfg(feature = "kube")]
async fn registry(
    options: &Options,
) -> Result<dynamo_transport::discovery::KubernetesRegistry, Box<dyn std::error::Error>> {
    use dynamo_transport::discovery::KubernetesRegistry;
    let client = kube::Client::try_default().await.map_err(|error| {
        format!(
            "no Kubernetes client (KUBECONFIG, ~/.kube/config or the pod's service account): \
             {error}"
        )
    })?;
    Ok(match &options.kubernetes_namespace {
        Some(namespace) => KubernetesRegistry::new(client, namespace, &options.namespace)?,
        None => KubernetesRegistry::in_default_namespace(client, &options.namespace)?,
    })
}

/// The workers of the deployment, and where they are, for the start-up line.
#[cfg(feature = "kube")]
pub(crate) async fn discovery(
    options: &Options,
) -> Result<(Box<dyn Discovery>, String), Box<dyn std::error::Error>> {
    let registry = registry(options).await?;
    let name = format!(
        "Kubernetes Leases dynamo/deployment={} in namespace {}",
        options.namespace,
        registry.namespace()
    );
    Ok((Box::new(registry), name))
}

/// Register `record` as a Lease of `ttl`, owned by the worker's pod when the environment names
/// it.
#[cfg(feature = "kube")]
pub(crate) async fn register(
    options: &Options,
    record: &WorkerRecord,
    ttl: Duration,
) -> Result<Registration, Box<dyn std::error::Error>> {
    let mut registry = registry(options).await?;
    if let (Ok(pod), Ok(uid)) = (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
        registry = registry.owned_by_pod(&pod, &uid);
    }
    Ok(registry.register(record, ttl).await?)
}

/// Without the `kube` feature the flag is refused when parsed; this says so again.
#[cfg(not(feature = "kube"))]
pub(crate) async fn discovery(
    _: &Options,
) -> Result<(Box<dyn Discovery>, String), Box<dyn std::error::Error>> {
    Err(WITHOUT_KUBE.into())
}

/// Without the `kube` feature the flag is refused when parsed; this says so again.
#[cfg(not(feature = "kube"))]
pub(crate) async fn register(
    _: &Options,
    _: &WorkerRecord,
    _: Duration,
) -> Result<Registration, Box<dyn std::error::Error>> {
    Err(WITHOUT_KUBE.into())
}

/// Delete the worker's Lease: watchers see it leave at once.
#[cfg(feature = "kube")]
pub(crate) async fn deregister(
    registration: Registration,
) -> Result<(), Box<dyn std::error::Error>> {
    Ok(registration.deregister().await?)
}

/// Without the `kube` feature there is no Lease to delete.
#[cfg(not(feature = "kube"))]
pub(crate) async fn deregister(
    registration: Registration,
) -> Result<(), Box<dyn std::error::Error>> {
    match registration {}
}
