//! A [`Scaler`] over Kubernetes: [`KubernetesScaler`] reads and sets the replica count of one
//! Deployment per worker pool through the API server's `scale` subresource, or of a custom
//! resource that declares one (a `DynamoGraphDeployment`-like resource).
//!
//! The scaler is a thin layer over `kube`: each call is one request to the API server,
//! and nothing runs in the background.
//!
//! | call | Deployment | custom resource |
//! |---|---|---|
//! | [`size`](Scaler::size) | `GET …/deployments/NAME`: `spec.replicas` desired, `status.readyReplicas` ready | `GET …/NAME/scale`: `spec.replicas` desired, `status.replicas` ready |
//! | [`scale`](Scaler::scale) | `PATCH …/deployments/NAME/scale` | `PATCH …/NAME/scale` |
//!
//! A Deployment's `scale` subresource reports only `status.replicas`, which counts pods that
//! are not ready yet, so `size` reads the Deployment itself for `status.readyReplicas`. A custom
//! resource's scale subresource reports what its definition's `statusReplicasPath` points to:
//! point it at the resource's count of *ready* workers. Every `PATCH` is a JSON merge patch
//! (`application/merge-patch+json`) `{"spec":{"replicas":N}}` with field manager
//! `dynamo-planner`.
//!
//! The service account needs `get` on `deployments` and `get` and `patch` on
//! `deployments/scale` in the namespace (the same on the custom resource and its `scale`):
//! `docs/scaling.md` has the Role, and says what the tests cover.

use std::fmt;

use ::kube::Client;
use ::kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use dynamo_core::WorkerRole;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;

use crate::{Error, PoolSize, Scaler};

/// The field manager named on every patch.
const FIELD_MANAGER: &str = "dynamo-planner";

/// Scales worker pools that run as Kubernetes Deployments or custom resources, one per pool,
/// all in one namespace.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use dynamo_core::WorkerRole;
/// use dynamo_planner::Scaler;
/// use dynamo_planner::kube::KubernetesScaler;
/// use kube::api::{ApiResource, GroupVersionKind};
///
/// // In a pod: the service account's token; elsewhere: the kubeconfig.
/// let client = kube::Client::try_default().await?;
/// let graph = ApiResource::from_gvk_with_plural(
///     &GroupVersionKind::gvk("nvidia.com", "v1alpha1", "DynamoGraphDeployment"),
///     "dynamographdeployments",
/// );
/// let scaler = KubernetesScaler::new(client, "dynamo")
///     .with_deployment(WorkerRole::Prefill, "llama-prefill")
///     .with_custom_resource(WorkerRole::Decode, graph, "llama-decode");
/// scaler.scale(WorkerRole::Prefill, 3).await?;
/// let size = scaler.size(WorkerRole::Prefill).await?;
/// tracing::info!("{} of {} prefill workers ready", size.ready, size.desired);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubernetesScaler {
    client: Client,
    namespace: String,
    pools: Vec<(WorkerRole, Target)>,
}

/// What a pool scales.
#[derive(Debug, Clone)]
enum Target {
    Deployment(String),
    Custom { resource: ApiResource, name: String },
}

impl KubernetesScaler {
    /// A scaler for resources in `namespace`, with no pools yet.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            pools: Vec::new(),
        }
    }

    /// Scales the `pool` pool through the Deployment `name` (replacing what the pool had).
    pub fn with_deployment(self, pool: WorkerRole, name: impl Into<String>) -> Self {
        self.with_target(pool, Target::Deployment(name.into()))
    }

    /// Scales the `pool` pool through the `scale` subresource of the custom resource `name` of
    /// kind `resource` (replacing what the pool had).
    ///
    /// The resource's definition must declare the subresource
    /// (`subresources.scale.specReplicasPath: .spec.replicas`), since the patch sets
    /// `spec.replicas` of the `Scale`; its `statusReplicasPath` should count ready workers, as
    /// [`size`](Scaler::size) reports it as ready.
    pub fn with_custom_resource(
        self,
        pool: WorkerRole,
        resource: ApiResource,
        name: impl Into<String>,
    ) -> Self {
        self.with_target(
            pool,
            Target::Custom {
                resource,
                name: name.into(),
            },
        )
    }

    /// The namespace the pools' resources live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn with_target(mut self, pool: WorkerRole, target: Target) -> Self {
        self.pools.retain(|(role, _)| *role != pool);
        self.pools.push((pool, target));
        self
    }

    fn target(&self, pool: WorkerRole) -> Result<&Target, Error> {
        self.pools
            .iter()
            .find(|(role, _)| *role == pool)
            .map(|(_, target)| target)
            .ok_or_else(|| Error::Scale {
                pool,
                message: "no Kubernetes resource is configured for this pool".to_owned(),
                source: None,
            })
    }

    async fn read(&self, pool: WorkerRole) -> Result<PoolSize, Error> {
        let target = self.target(pool)?;
        let failed = |error| self.failure(pool, target, "read", error);
        match target {
            Target::Deployment(name) => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                let deployment = api.get(name).await.map_err(failed)?;
                // The API server defaults `spec.replicas` to 1; a missing status means no pods.
                let desired = deployment.spec.and_then(|spec| spec.replicas).unwrap_or(1);
                let ready = deployment
                    .status
                    .and_then(|status| status.ready_replicas)
                    .unwrap_or(0);
                Ok(PoolSize {
                    desired: count(desired),
                    ready: count(ready),
                })
            }
            Target::Custom { resource, name } => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &self.namespace, resource);
                let scale = api.get_scale(name).await.map_err(failed)?;
                let desired = scale.spec.and_then(|spec| spec.replicas).unwrap_or(0);
                let ready = scale.status.map_or(0, |status| status.replicas);
                Ok(PoolSize {
                    desired: count(desired),
                    ready: count(ready),
                })
            }
        }
    }

    async fn patch(&self, pool: WorkerRole, replicas: usize) -> Result<(), Error> {
        let target = self.target(pool)?;
        let replicas = i32::try_from(replicas).map_err(|_| Error::Scale {
            pool,
            message: format!(
                "{replicas} replicas is more than Kubernetes accepts ({})",
                i32::MAX
            ),
            source: None,
        })?;
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let failed = |error| self.failure(pool, target, "scale", error);
        match target {
            Target::Deployment(name) => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
                api.patch_scale(name, &params, &patch)
                    .await
                    .map_err(failed)?;
            }
            Target::Custom { resource, name } => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &self.namespace, resource);
                api.patch_scale(name, &params, &patch)
                    .await
                    .map_err(failed)?;
            }
        }
        tracing::info!(
            pool = %pool,
            resource = %Named { namespace: &self.namespace, target },
            replicas,
            "asked Kubernetes to scale"
        );
        Ok(())
    }

    /// [`Error::Scale`] for a failed request, with the API server's own message.
    fn failure(
        &self,
        pool: WorkerRole,
        target: &Target,
        action: &str,
        error: ::kube::Error,
    ) -> Error {
        let named = Named {
            namespace: &self.namespace,
            target,
        };
        let message = match &error {
            ::kube::Error::Api(status) if status.is_not_found() => match target {
                Target::Deployment(_) => format!("{named} not found: {}", status.message),
                Target::Custom { .. } => {
                    format!(
                        "{named} not found, or it has no scale subresource: {}",
                        status.message
                    )
                }
            },
            ::kube::Error::Api(status) => format!(
                "cannot {action} {named}: {} ({} {})",
                status.message, status.code, status.reason
            ),
            other => format!("cannot {action} {named}: {other}"),
        };
        Error::Scale {
            pool,
            message,
            source: Some(Box::new(error)),
        }
    }
}

impl Scaler for KubernetesScaler {
    fn size(&self, pool: WorkerRole) -> BoxFuture<'_, Result<PoolSize, Error>> {
        Box::pin(self.read(pool))
    }

    fn scale(&self, pool: WorkerRole, replicas: usize) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.patch(pool, replicas))
    }
}

impl fmt::Debug for KubernetesScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesScaler")
            .field("namespace", &self.namespace)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

/// A replica count from the API (never negative there) as a count.
fn count(replicas: i32) -> usize {
    usize::try_from(replicas).unwrap_or(0)
}

/// A pool's resource as error messages and logs name it: ``deployment `NS/NAME` ``.
struct Named<'a> {
    namespace: &'a str,
    target: &'a Target,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Target::Deployment(name) => write!(f, "deployment `{}/{name}`", self.namespace),
            Target::Custom { resource, name } => {
                write!(f, "{} `{}/{name}`", resource.kind, self.namespace)
            }
        }
    }
}
