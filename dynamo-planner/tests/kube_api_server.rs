//! `KubernetesScaler` against a real Kubernetes control plane ([`control_plane`]: etcd, the API
//! server and the controller manager, with TLS, bearer tokens and RBAC). The planner
//! authenticates as a service account whose only grant is the Role that `docs/scaling.md`
//! documents; the live loop (`dynamo_planner::run`) drives a Deployment.
//!
//! There are no nodes: pods stay pending until the test marks them ready through their status,
//! as a kubelet would once a worker has loaded its model; a custom resource's ready count is set
//! the same way, as its operator would.
#![cfg(feature = "kube")]

mod control_plane;

use dynamo_core::WorkerRole;
use dynamo_planner::kube::KubernetesScaler;
use dynamo_planner::policy::{LoadConfig, LoadPolicy};
use dynamo_planner::predict::PredictorKind;
use dynamo_planner::{
    Bounds, Error, Observation, Planner, PlannerConfig, PoolSize, Replicas, Scaler, WorkerLoad,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use control_plane::{ControlPlane, PATIENCE, create, define_graph_deployments, poll, wait_for};

const NAMESPACE: &str = "dynamo";
/// The Deployment of the decode pool, whose pods carry the label `app=llama-decode`.
const DEPLOYMENT: &str = "llama-decode";

/// The Role and RoleBinding of `docs/scaling.md` (the same rules and subject, written out here
/// as JSON; keep the two alike), for the service account `dynamo-planner`.
async fn grant_the_documented_role(admin: &kube::Client) {
    let roles: Api<Role> = Api::namespaced(admin.clone(), NAMESPACE);
    create(
        &roles,
        json!({
            "metadata": {"name": "dynamo-planner", "namespace": NAMESPACE},
            "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
                {"apiGroups": ["nvidia.com"], "resources": ["dynamographdeployments/scale"],
                 "verbs": ["get", "patch"]},
            ],
        }),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), NAMESPACE);
    create(
        &bindings,
        json!({
            "metadata": {"name": "dynamo-planner", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "dynamo-planner"},
            "subjects": [{"kind": "ServiceAccount", "name": "dynamo-planner",
                          "namespace": NAMESPACE}],
        }),
    )
    .await;
}

/// Creates the namespace and in it the Deployment, one replica of a pod that never runs.
async fn deployment_of_one(admin: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create(&namespaces, json!({"metadata": {"name": NAMESPACE}})).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    create(
        &deployments,
        json!({
            "metadata": {"name": DEPLOYMENT},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": DEPLOYMENT}},
                "template": {
                    "metadata": {"labels": {"app": DEPLOYMENT}},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [{"name": "worker", "image": "registry.k8s.io/pause:3.10"}],
                    },
                },
            },
        }),
    )
    .await;
}

/// Creates the service account `dynamo-planner` in the namespace, and returns the token the
/// token controller issues for it (what a pod of that account would mount).
async fn planner_service_account(admin: &kube::Client) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    create(&accounts, json!({"metadata": {"name": "dynamo-planner"}})).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    wait_for("the planner's service-account token", async || {
        let account = accounts.get("dynamo-planner").await.ok()?;
        let name = account.secrets?.first()?.name.clone()?;
        let secret = secrets.get(&name).await.ok()?;
        let token = secret.data?.remove("token")?;
        String::from_utf8(token.0).ok()
    })
    .await
}

/// The Deployment's pods, listed by its label.
async fn pods(admin: &kube::Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    pods.list(&ListParams::default().labels(&format!("app={DEPLOYMENT}")))
        .await
        .expect("the pods")
        .items
}

/// Marks every pod of the Deployment that is not ready yet ready, as the kubelet would once its
/// worker has started; returns how many it marked.
async fn kubelet_marks_pods_ready(admin: &kube::Client) -> usize {
    let api: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let ready = json!({"status": {"phase": "Running",
                                  "conditions": [{"type": "Ready", "status": "True"}]}});
    let mut marked = 0;
    for pod in pods(admin).await {
        let already = pod
            .status
            .and_then(|status| status.conditions)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            });
        if !already {
            let name = pod.metadata.name.unwrap_or_default();
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready))
                .await
                .expect("pod status patched");
            marked += 1;
        }
    }
    marked
}

/// Waits until the Deployment's controllers have left `count` pods.
async fn pods_become(admin: &kube::Client, count: usize) {
    wait_for(&format!("{count} pods"), async || {
        (pods(admin).await.len() == count).then_some(())
    })
    .await;
}

/// Waits until the scaler reads the decode pool as `desired` workers of which `ready` are ready.
async fn decode_becomes(scaler: &KubernetesScaler, desired: usize, ready: usize) {
    let want = PoolSize { desired, ready };
    let mut last = None;
    let outcome = poll::<(), ()>(async || {
        let size = scaler.size(WorkerRole::Decode).await;
        if matches!(size, Ok(size) if size == want) {
            return Ok(());
        }
        last = Some(size);
        Err(None)
    })
    .await;
    assert!(
        outcome.is_ok(),
        "waited {PATIENCE:?} for the decode pool to be {want:?}; it was {last:?}"
    );
}

#[tokio::test]
async fn a_deployment_is_scaled_up_and_down_by_a_planner_that_holds_only_the_documented_role() {
    let plane = ControlPlane::start(true).await;
    let admin = plane.admin().await;
    deployment_of_one(&admin).await;
    let token = planner_service_account(&admin).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    let scaler = KubernetesScaler::new(plane.client("dynamo-planner", &token).await, NAMESPACE)
        .with_deployment(WorkerRole::Decode, DEPLOYMENT)
        .with_deployment(WorkerRole::Aggregated, "llama-missing");

    // Authenticated, but not yet allowed: the API server's 403 is the pool's scale error.
    let Err(Error::Scale { pool, message, .. }) = scaler.size(WorkerRole::Decode).await else {
        panic!("a planner without the Role is refused");
    };
    assert_eq!(pool, WorkerRole::Decode);
    assert!(
        message.contains("forbidden")
            && message.contains("system:serviceaccount:dynamo:dynamo-planner"),
        "{message}"
    );

    grant_the_documented_role(&admin).await;
    // The pod the Deployment asked for exists but has not started: desired 1, ready 0.
    pods_become(&admin, 1).await;
    decode_becomes(&scaler, 1, 0).await;
    assert_eq!(kubelet_marks_pods_ready(&admin).await, 1);
    decode_becomes(&scaler, 1, 1).await;

    // Scaled up: the controllers create two pods, and the Deployment's `scale` subresource
    // counts three replicas while two have not started; `size` counts one ready.
    scaler
        .scale(WorkerRole::Decode, 3)
        .await
        .expect("scaled up");
    pods_become(&admin, 3).await;
    wait_for(
        "the scale subresource to count three replicas",
        async || {
            let scale = deployments.get_scale(DEPLOYMENT).await.ok()?;
            (scale.status?.replicas == 3).then_some(())
        },
    )
    .await;
    decode_becomes(&scaler, 3, 1).await;
    assert_eq!(kubelet_marks_pods_ready(&admin).await, 2);
    decode_becomes(&scaler, 3, 3).await;

    // Scaled down: the controllers remove two pods.
    scaler
        .scale(WorkerRole::Decode, 1)
        .await
        .expect("scaled down");
    pods_become(&admin, 1).await;
    decode_becomes(&scaler, 1, 1).await;

    // A Deployment that does not exist.
    let Err(Error::Scale { message, .. }) = scaler.scale(WorkerRole::Aggregated, 2).await else {
        panic!("a missing deployment is an error");
    };
    assert_eq!(
        message,
        r#"deployment `dynamo/llama-missing` not found: deployments.apps "llama-missing" not found"#
    );
}

#[tokio::test]
async fn the_live_planner_loop_grows_and_shrinks_a_deployment() {
    let plane = ControlPlane::start(false).await;
    let admin = plane.admin().await;
    deployment_of_one(&admin).await;
    let scaler = KubernetesScaler::new(admin.clone(), NAMESPACE)
        .with_deployment(WorkerRole::Aggregated, DEPLOYMENT);
    let config = PlannerConfig {
        interval_s: 60.0,
        bounds: Bounds {
            min_per_pool: 1,
            max_per_pool: 4,
            budget: 4,
            ..Bounds::default()
        },
        advisory: false,
    };
    let policy = LoadPolicy::new(LoadConfig::default());
    let mut planner =
        Planner::new(config, policy, || PredictorKind::Constant.build()).expect("a planner");
    // Two intervals with ten requests waiting per worker, then three quiet ones.
    let intervals = [10, 10, 0, 0, 0].map(|waiting| Observation {
        interval_s: 60.0,
        workers: vec![WorkerLoad {
            role: WorkerRole::Aggregated,
            waiting,
            running: 4,
            kv_usage: 0.1,
        }],
        ..Observation::default()
    });
    // Each step reads the size the previous one set from the Deployment.
    let targets: Vec<Replicas> = dynamo_planner::run(
        &mut planner,
        futures::stream::iter(intervals),
        &scaler,
        Replicas::Aggregated(1),
    )
    .map(|decision| decision.target)
    .collect()
    .await;
    assert_eq!(targets, [2, 3, 3, 3, 2].map(Replicas::Aggregated));
    let deployments: Api<Deployment> = Api::namespaced(admin, NAMESPACE);
    let deployment = deployments.get(DEPLOYMENT).await.expect("the deployment");
    assert_eq!(deployment.spec.and_then(|spec| spec.replicas), Some(2));
}

#[tokio::test]
async fn a_custom_resource_with_a_scale_subresource_is_scaled_and_its_ready_count_read() {
    let plane = ControlPlane::start(false).await;
    let admin = plane.admin().await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create(&namespaces, json!({"metadata": {"name": NAMESPACE}})).await;
    let resource = define_graph_deployments(&admin).await;
    let graphs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NAMESPACE, &resource);
    create(
        &graphs,
        json!({
            "apiVersion": "nvidia.com/v1alpha1",
            "kind": "DynamoGraphDeployment",
            "metadata": {"name": "llama-prefill"},
            "spec": {"replicas": 1},
        }),
    )
    .await;
    let scaler = KubernetesScaler::new(admin.clone(), NAMESPACE).with_custom_resource(
        WorkerRole::Prefill,
        resource,
        "llama-prefill",
    );
    assert_eq!(
        scaler.size(WorkerRole::Prefill).await.expect("the size"),
        PoolSize {
            desired: 1,
            ready: 0
        }
    );
    scaler.scale(WorkerRole::Prefill, 4).await.expect("scaled");
    let scaled = graphs.get("llama-prefill").await.expect("the resource");
    assert_eq!(scaled.data["spec"]["replicas"], 4);
    assert_eq!(
        scaler.size(WorkerRole::Prefill).await.expect("the size"),
        PoolSize {
            desired: 4,
            ready: 0
        }
    );
    // Its operator reports the workers ready.
    graphs
        .patch_status(
            "llama-prefill",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 4}})),
        )
        .await
        .expect("status patched");
    assert_eq!(
        scaler.size(WorkerRole::Prefill).await.expect("the size"),
        PoolSize {
            desired: 4,
            ready: 4
        }
    );
}
