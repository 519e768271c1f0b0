//! `dynamo-serve planner --kubernetes-deployment`: the planner scales one Kubernetes Deployment
//! per pool (or, with `--kubernetes-resource`, one custom resource that declares a `scale`
//! subresource) through the API server (`dynamo_planner::kube::KubernetesScaler`) instead of
//! starting worker processes.
//!
//! The workers are the Deployments' pods. They register in the deployment's etcd and report
//! their load on NATS as any `dynamo-serve worker` does, so the planner observes them as it
//! observes its own processes; a pool's ready count is the Deployment's `readyReplicas`. The
//! client is configured as `kubectl`'s is: `KUBECONFIG` or `~/.kube/config`, else the service
//! account of the pod the planner runs in. When the planner stops, the Deployments keep the
//! replicas they have.

use std::fmt;
use std::str::FromStr;

use dynamo_core::WorkerRole;
use dynamo_planner::{Error, Replicas, Scaler};

/// `--kubernetes-deployment [POOL=]NAME`: the Deployment that holds a pool's workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolDeployment {
    /// The pool named (`prefill`, `decode` or `aggregated`), if any.
    pub(crate) pool: Option<WorkerRole>,
    pub(crate) name: String,
}

impl FromStr for PoolDeployment {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (pool, name) = match text.split_once('=') {
            Some((pool, name)) => {
                let pool = [
                    WorkerRole::Aggregated,
                    WorkerRole::Prefill,
                    WorkerRole::Decode,
                ]
                .into_iter()
                .find(|role| role.as_str() == pool)
                .ok_or_else(|| {
                    format!("`{pool}` is not a pool: use prefill=NAME, decode=NAME or NAME")
                })?;
                (Some(pool), name)
            }
            None => (None, text),
        };
        if name.is_empty() {
            return Err("a Deployment needs a name".to_owned());
        }
        Ok(Self {
            pool,
            name: name.to_owned(),
        })
    }
}

/// `--kubernetes-resource PLURAL.VERSION.GROUP`: the kind of the objects the pools are, where
/// they are not Deployments, in `kubectl`'s fully qualified form
/// (`dynamographdeployments.v1alpha1.nvidia.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceKind {
    pub(crate) plural: String,
    pub(crate) version: String,
    pub(crate) group: String,
}

impl FromStr for ResourceKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts = text
            .split_once('.')
            .and_then(|(plural, rest)| Some((plural, rest.split_once('.')?)));
        match parts {
            Some((plural, (version, group)))
                if !plural.is_empty() && !version.is_empty() && !group.is_empty() =>
            {
                Ok(Self {
                    plural: plural.to_owned(),
                    version: version.to_owned(),
                    group: group.to_owned(),
                })
            }
            _ => Err(format!(
                "`{text}`: give the resource as PLURAL.VERSION.GROUP, as in \
                 dynamographdeployments.v1alpha1.nvidia.com"
            )),
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.plural, self.version, self.group)
    }
}

/// The Deployments (or custom resources) the planner scales, and their namespace.
#[derive(Debug)]
pub(crate) struct Kubernetes {
    /// The namespace given; else the kubeconfig's, or the pod's.
    #[cfg_attr(
        all(not(feature = "kube"), not(test)),
        expect(
            dead_code,
            reason = "read by the Kubernetes client, which this build lacks"
        )
    )]
    pub(crate) namespace: Option<String>,
    pub(crate) deployments: Vec<PoolDeployment>,
    /// The kind of the objects named, where they are not Deployments.
    pub(crate) resource: Option<ResourceKind>,
}

impl Kubernetes {
    /// The Deployment of each pool of `shape`, or why the flags do not name exactly one for
    /// each: an aggregated pool takes one unnamed (or `aggregated=`) Deployment, a
    /// disaggregated deployment one `prefill=` and one `decode=`.
    pub(crate) fn pools(&self, shape: Replicas) -> Result<Vec<(WorkerRole, &str)>, String> {
        let (wanted, usage) = match shape {
            Replicas::Aggregated(_) => (
                vec![WorkerRole::Aggregated],
                "one --kubernetes-deployment NAME",
            ),
            Replicas::Disaggregated { .. } => (
                vec![WorkerRole::Prefill, WorkerRole::Decode],
                "with --disaggregated, --kubernetes-deployment prefill=NAME and \
                 --kubernetes-deployment decode=NAME",
            ),
        };
        let pool_of = |deployment: &PoolDeployment| match (deployment.pool, shape) {
            (None, Replicas::Aggregated(_)) => Some(WorkerRole::Aggregated),
            (pool, _) => pool.filter(|pool| wanted.contains(pool)),
        };
        let mut pools = Vec::new();
        for deployment in &self.deployments {
            match pool_of(deployment) {
                Some(pool) if !pools.iter().any(|(named, _)| *named == pool) => {
                    pools.push((pool, deployment.name.as_str()));
                }
                _ => return Err(format!("--kubernetes-deployment: give {usage}")),
            }
        }
        if pools.len() < wanted.len() {
            return Err(format!("--kubernetes-deployment: give {usage}"));
        }
        pools.sort_by_key(|(pool, _)| wanted.iter().position(|wanted| wanted == pool));
        Ok(pools)
    }
}

/// The objects of `pools` in `namespace`, as the planner's banner names them.
pub(crate) struct Named<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) pools: &'a [(WorkerRole, &'a str)],
    /// Their kind, where they are not Deployments.
    pub(crate) resource: Option<&'a ResourceKind>,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .pools
            .iter()
            .map(|(pool, name)| match pool {
                WorkerRole::Aggregated => format!("{}/{name}", self.namespace),
                pool => format!("{}/{name} ({pool})", self.namespace),
            })
            .collect();
        let noun = match self.resource {
            Some(resource) => resource.to_string(),
            None if names.len() == 1 => "Deployment".to_owned(),
            None => "Deployments".to_owned(),
        };
        write!(
            f,
            "as the replicas of Kubernetes {noun} {}",
            names.join(" and ")
        )
    }
}

/// Plans the objects `kubernetes` names, one step per observation, until the stream ends or
/// the planner is stopped; `announce` is given the objects, as the banner names them.
pub(crate) async fn plan(
    kubernetes: &Kubernetes,
    settings: &super::Settings,
    planner: &mut dynamo_planner::Planner,
    observations: impl futures::Stream<Item = dynamo_planner::Observation>,
    announce: impl FnOnce(&str),
) -> Result<(), Box<dyn std::error::Error>> {
    let shape = settings.shape(settings.min_workers);
    let pools = kubernetes.pools(shape)?;
    let (scaler, namespace) = connect(kubernetes, &pools).await?;
    if !settings.advisory {
        into_bounds(&*scaler, &pools, settings.min_workers, settings.max_workers).await?;
    }
    let namespace = namespace.as_str();
    let resource = kubernetes.resource.as_ref();
    let named = Named {
        namespace,
        pools: &pools,
        resource,
    };
    announce(&named.to_string());
    super::drive(planner, observations, &*scaler, shape).await;
    tracing::info!("the planner stops; the Kubernetes objects keep the replicas they have");
    Ok(())
}

/// A scaler over the Deployments (or custom resources) of `pools`, with a client configured as
/// `kubectl`'s is, and the namespace it scales in.
#[cfg(feature = "kube")]
async fn connect(
    kubernetes: &Kubernetes,
    pools: &[(WorkerRole, &str)],
) -> Result<(Box<dyn Scaler>, String), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await.map_err(|error| {
        format!(
            "no Kubernetes client (KUBECONFIG, ~/.kube/config or the pod's service account): \
             {error}"
        )
    })?;
    let namespace = kubernetes
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let scaler = pools.iter().fold(
        dynamo_planner::kube::KubernetesScaler::new(client, namespace.clone()),
        |scaler, &(pool, name)| match &kubernetes.resource {
            None => scaler.with_deployment(pool, name),
            // Named in the scaler's messages by its plural: the flag gives no kind.
            Some(kind) => {
                let gvk =
                    kube::api::GroupVersionKind::gvk(&kind.group, &kind.version, &kind.plural);
                let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &kind.plural);
                scaler.with_custom_resource(pool, resource, name)
            }
        },
    );
    Ok((Box::new(scaler), namespace))
}

/// Without the `kube` feature the flags are refused when parsed; this says so again.
#[cfg(not(feature = "kube"))]
async fn connect(
    _: &Kubernetes,
    _: &[(WorkerRole, &str)],
) -> Result<(Box<dyn Scaler>, String), Box<dyn std::error::Error>> {
    Err(WITHOUT_KUBE.into())
}

/// Why `--kubernetes-deployment` is refused by a `dynamo-serve` built without the `kube` feature.
pub(crate) const WITHOUT_KUBE: &str = "--kubernetes-deployment needs a dynamo-serve built with \
    the kube feature: cargo build --release -p dynamo-serve --features kube";

/// Brings each pool's replicas between `min` and `max`, leaving a pool already between them
/// as it is (its pods serve; the planner's first step sizes it).
pub(crate) async fn into_bounds(
    scaler: &dyn Scaler,
    pools: &[(WorkerRole, &str)],
    min: usize,
    max: usize,
) -> Result<(), Error> {
    for &(pool, name) in pools {
        let desired = scaler.size(pool).await?.desired;
        let bounded = desired.clamp(min, max);
        if bounded != desired {
            tracing::info!(%pool, deployment = name, from = desired, to = bounded, "planner: bringing the pool within --min-workers and --max-workers");
            scaler.scale(pool, bounded).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubernetes(flags: &[&str]) -> Kubernetes {
        let deployments = flags
            .iter()
            .map(|flag| flag.parse().expect("a well-formed flag"))
            .collect();
        Kubernetes {
            namespace: None,
            deployments,
            resource: None,
        }
    }

    /// The pools of `shape` the flags give, with their Deployments' names.
    fn pools(flags: &[&str], shape: Replicas) -> Result<Vec<(WorkerRole, String)>, String> {
        let kubernetes = kubernetes(flags);
        let pools = kubernetes.pools(shape)?;
        Ok(pools
            .into_iter()
            .map(|(pool, name)| (pool, name.to_owned()))
            .collect())
    }

    const AGGREGATED: Replicas = Replicas::Aggregated(1);
    const DISAGGREGATED: Replicas = Replicas::Disaggregated {
        prefill: 1,
        decode: 1,
    };

    #[test]
    fn an_aggregated_pool_takes_one_deployment() {
        let pools = |flags: &[&str]| pools(flags, AGGREGATED);
        let llama = Ok(vec![(WorkerRole::Aggregated, "llama".to_owned())]);
        assert_eq!(pools(&["llama"]), llama);
        assert_eq!(pools(&["aggregated=llama"]), llama);
        for wrong in [&["a", "b"][..], &["prefill=a"], &[]] {
            let error = pools(wrong).expect_err("refused");
            assert!(
                error.contains("one --kubernetes-deployment NAME"),
                "{error}"
            );
        }
    }

    #[test]
    fn disaggregated_pools_take_a_prefill_and_a_decode_deployment() {
        let pools = |flags: &[&str]| pools(flags, DISAGGREGATED);
        let both = Ok(vec![
            (WorkerRole::Prefill, "p".to_owned()),
            (WorkerRole::Decode, "d".to_owned()),
        ]);
        assert_eq!(pools(&["prefill=p", "decode=d"]), both);
        assert_eq!(pools(&["decode=d", "prefill=p"]), both);
        for wrong in [
            &["p"][..],
            &["prefill=p"],
            &["prefill=p", "prefill=q", "decode=d"],
            &["prefill=p", "d"],
        ] {
            let error = pools(wrong).expect_err("refused");
            assert!(error.contains("prefill=NAME"), "{error}");
        }
    }

    #[test]
    fn a_pool_must_be_one_of_the_three_and_a_name_given() {
        assert!(
            "mixed=a"
                .parse::<PoolDeployment>()
                .is_err_and(|error| error.contains("`mixed` is not a pool"))
        );
        assert!("decode=".parse::<PoolDeployment>().is_err());
        assert!("".parse::<PoolDeployment>().is_err());
        let named: PoolDeployment = "decode=d".parse().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            (named.pool, named.name.as_str()),
            (Some(WorkerRole::Decode), "d")
        );
    }

    #[test]
    fn the_banner_names_namespace_and_objects() {
        let pools = [(WorkerRole::Prefill, "p"), (WorkerRole::Decode, "d")];
        let named = Named {
            namespace: "dynamo",
            pools: &pools,
            resource: None,
        };
        assert_eq!(
            named.to_string(),
            "as the replicas of Kubernetes Deployments dynamo/p (prefill) and dynamo/d (decode)"
        );
        let graphs: ResourceKind = "dynamographdeployments.v1alpha1.nvidia.com"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        let named = Named {
            namespace: "dynamo",
            pools: &pools[..1],
            resource: Some(&graphs),
        };
        assert_eq!(
            named.to_string(),
            "as the replicas of Kubernetes dynamographdeployments.v1alpha1.nvidia.com dynamo/p \
             (prefill)"
        );
    }

    #[test]
    fn a_resource_is_plural_version_and_group() {
        let graphs: ResourceKind = "dynamographdeployments.v1alpha1.nvidia.com"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            (
                graphs.plural.as_str(),
                graphs.version.as_str(),
                graphs.group.as_str()
            ),
            ("dynamographdeployments", "v1alpha1", "nvidia.com")
        );
        for wrong in [
            "dynamographdeployments",
            "graphs.v1",
            "graphs..nvidia.com",
            ".v1.x",
        ] {
            let error = wrong.parse::<ResourceKind>().expect_err("refused");
            assert!(error.contains("PLURAL.VERSION.GROUP"), "{error}");
        }
    }
}
