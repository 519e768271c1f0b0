//! `KubernetesScaler` against a real Kubernetes control plane: `kube-apiserver` and
//! `kube-controller-manager` 1.20.2 (built by `.ci/kubernetes` from Debian's `kubernetes` source
//! package) over an `etcd` (Debian's `etcd-server`), on loopback ports, with TLS, bearer tokens
//! and RBAC. The planner authenticates as a service account whose only grant is the Role that
//! `docs/scaling.md` documents; the live loop (`dynamo_planner::run`) drives a Deployment.
//!
//! There are no nodes: pods stay pending until the test marks them ready through their status,
//! as a kubelet would once a worker has loaded its model; a custom resource's ready count is set
//! the same way, as its operator would.
//!
//! The binaries are found in `DYNAMO_KUBE_BIN`, else in CI's cache
//! (`~/.cache/dynamo-ci/kubernetes-1.20.2/bin`). Without them the tests fail and say how to
//! build them.
#![cfg(feature = "kube")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dynamo_core::WorkerRole;
use dynamo_planner::kube::KubernetesScaler;
use dynamo_planner::policy::{LoadConfig, LoadPolicy};
use dynamo_planner::predict::PredictorKind;
use dynamo_planner::{
    Bounds, Error, Observation, Planner, PlannerConfig, PoolSize, Replicas, Scaler, WorkerLoad,
};
use dynamo_transport::local::{LocalAuthority, LocalEtcd, free_port};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

const NAMESPACE: &str = "dynamo";
/// The Deployment of the decode pool, whose pods carry the label `app=llama-decode`.
const DEPLOYMENT: &str = "llama-decode";
/// The token of the cluster's administrator (group `system:masters`), which the test and the
/// controller manager use.
const ADMIN_TOKEN: &str = "dynamo-test-admin-token";
/// How long the control plane, a controller or a token may take to appear.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where the Kubernetes binaries are.
fn kube_bin() -> PathBuf {
    let dir = std::env::var_os("DYNAMO_KUBE_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/dynamo-ci/kubernetes-1.20.2/bin"))
        })
        .unwrap_or_default();
    assert!(
        dir.join("kube-apiserver").is_file() && dir.join("kube-controller-manager").is_file(),
        "no kube-apiserver and kube-controller-manager in {}: run .ci/run's Kubernetes step \
         (it builds them from Debian's source package), or point DYNAMO_KUBE_BIN at a folder \
         that holds both",
        dir.display()
    );
    dir
}

/// One process of the control plane, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd, an API server and (if asked for) the controller manager, with a fresh certificate
/// authority, serving certificate and service-account key.
struct ControlPlane {
    // Dropped in this order: the controllers, the API server, then etcd.
    _controllers: Option<Process>,
    api_server: Process,
    _etcd: LocalEtcd,
    dir: tempfile::TempDir,
    url: String,
}

impl ControlPlane {
    async fn start(controllers: bool) -> ControlPlane {
        let bin = kube_bin();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let etcd = LocalEtcd::start().expect("etcd starts (Debian package etcd-server)");
        let authority = LocalAuthority::new().expect("a certificate authority");
        let serving = authority
            .issue(&["127.0.0.1", "localhost"])
            .expect("a serving certificate");
        // The key that signs service-account tokens, and its certificate, from which the API
        // server reads the public key that checks them.
        let signer = authority
            .issue(&["service-accounts"])
            .expect("a token signing key");
        let file = |name: &str, text: &str| write(dir.path(), name, text);
        let ca = file("ca.pem", &authority.pem());
        let cert = file("apiserver.pem", &serving.cert);
        let key = file("apiserver-key.pem", &serving.key);
        let sa_key = file("sa-key.pem", &signer.key);
        let sa_cert = file("sa.pem", &signer.cert);
        let tokens = file(
            "tokens.csv",
            &format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
        );
        let port = free_port().expect("a free port");
        let url = format!("https://127.0.0.1:{port}");
        let api_server = spawn(
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={}", etcd.url()),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--insecure-port=0".into(),
                format!("--tls-cert-file={cert}"),
                format!("--tls-private-key-file={key}"),
                format!("--token-auth-file={tokens}"),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-signing-key-file={sa_key}"),
                format!("--service-account-key-file={sa_cert}"),
            ],
            &dir.path().join("kube-apiserver.log"),
        );
        let admin_config = kubeconfig(&url, Path::new(&ca), "admin", ADMIN_TOKEN);
        let mut plane = ControlPlane {
            _controllers: None,
            api_server,
            _etcd: etcd,
            url,
            dir,
        };
        plane.until_ready().await;
        if !controllers {
            return plane;
        }
        let admin_file = write(plane.dir.path(), "admin.kubeconfig", &admin_config);
        let controllers = spawn(
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={admin_file}"),
                // Deployments and their ReplicaSets; each namespace's `default` service
                // account; and the service-account tokens the planner authenticates with.
                "--controllers=deployment,replicaset,serviceaccount,serviceaccount-token".into(),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--root-ca-file={ca}"),
                "--leader-elect=false".into(),
                "--port=0".into(),
                "--secure-port=0".into(),
            ],
            &plane.dir.path().join("kube-controller-manager.log"),
        );
        ControlPlane {
            _controllers: Some(controllers),
            ..plane
        }
    }

    /// A client that authenticates with `token` and trusts the control plane's authority, built
    /// from a kubeconfig as a user's would be.
    async fn client(&self, user: &str, token: &str) -> kube::Client {
        let ca = self.dir.path().join("ca.pem");
        let text = kubeconfig(&self.url, &ca, user, token);
        let kubeconfig = Kubeconfig::from_yaml(&text).expect("a kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a client configuration");
        kube::Client::try_from(config).expect("a client")
    }

    /// Waits until the API server answers `/readyz` with `ok`; fails with the end of its log if
    /// it exits or takes longer than [`PATIENCE`].
    async fn until_ready(&mut self) {
        let admin = self.admin().await;
        let api_server = &mut self.api_server.0;
        let outcome = poll(async || {
            let request = axum::http::Request::get("/readyz").body(Vec::new());
            if let Ok(request) = request
                && admin
                    .request_text(request)
                    .await
                    .is_ok_and(|body| body == "ok")
            {
                return Ok(());
            }
            match api_server.try_wait() {
                Ok(Some(status)) => Err(Some(status)),
                _ => Err(None),
            }
        })
        .await;
        if let Err(exited) = outcome {
            let log = std::fs::read_to_string(self.dir.path().join("kube-apiserver.log"))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            panic!("the API server is not ready ({exited:?}); the end of its log:\n{tail}");
        }
    }

    async fn admin(&self) -> kube::Client {
        self.client("admin", ADMIN_TOKEN).await
    }
}

/// Writes `text` to the file `name` in `dir`; returns its path.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a control-plane file");
    path.display().to_string()
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Process {
    let log = std::fs::File::create(log).expect("a log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    Process(child)
}

fn kubeconfig(url: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n\
         current-context: test\n",
        ca.display()
    )
}

/// Calls `attempt` every 100 ms until it gives `Ok`, or until it gives `Err(Some(_))` (a
/// failure that waiting cannot mend), or for at most [`PATIENCE`]; returns its last answer.
async fn poll<T, E>(
    mut attempt: impl AsyncFnMut() -> Result<T, Option<E>>,
) -> Result<T, Option<E>> {
    let deadline = Instant::now() + PATIENCE;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let answer = attempt().await;
        if !matches!(answer, Err(None)) || Instant::now() >= deadline {
            return answer;
        }
    }
}

/// Calls `attempt` until it gives a value, for at most [`PATIENCE`].
async fn wait_for<T>(what: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    poll::<T, ()>(async || attempt().await.ok_or(None))
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

async fn create<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &from_json(object))
        .await
        .expect("created");
}

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
    // A DynamoGraphDeployment-like resource whose definition declares the `scale` subresource
    // as docs/scaling.md asks: desired at `.spec.replicas`, ready at `.status.readyReplicas`.
    let definitions: Api<CustomResourceDefinition> = Api::all(admin.clone());
    create(
        &definitions,
        json!({
            "metadata": {"name": "dynamographdeployments.nvidia.com"},
            "spec": {
                "group": "nvidia.com",
                "scope": "Namespaced",
                "names": {"plural": "dynamographdeployments", "singular": "dynamographdeployment",
                          "kind": "DynamoGraphDeployment"},
                "versions": [{
                    "name": "v1alpha1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    }},
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.replicas",
                                  "statusReplicasPath": ".status.readyReplicas"},
                    },
                }],
            },
        }),
    )
    .await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nvidia.com", "v1alpha1", "DynamoGraphDeployment"),
        "dynamographdeployments",
    );
    let graphs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NAMESPACE, &resource);
    let graph = json!({
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "llama-prefill"},
        "spec": {"replicas": 1},
    });
    // The definition is served once the API server has established it.
    wait_for("the custom resource definition", async || {
        let object: DynamicObject = from_json(graph.clone());
        graphs.create(&PostParams::default(), &object).await.ok()
    })
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
