//! A Kubernetes control plane for tests: `etcd` (Debian's `etcd-server`), `kube-apiserver` and,
//! if asked for, `kube-controller-manager` 1.20.2 (built by `.ci/kubernetes` from Debian's
//! `kubernetes` source package), on loopback ports, with TLS, bearer tokens and RBAC.
//!
//! Shared by `dynamo-planner/tests/kube_api_server.rs` and
//! `dynamo-serve/tests/planner_kubernetes.rs` (which includes this file by its path). The
//! binaries are found in `DYNAMO_KUBE_BIN`, else in CI's cache
//! (`~/.cache/dynamo-ci/kubernetes-1.20.2/bin`); without them a test fails and says how to build
//! them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dynamo_transport::local::{LocalAuthority, LocalEtcd, free_port};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;
/// The token of the cluster's administrator (group `system:masters`), which the test and the
/// controller manager use.
pub(crate) const ADMIN_TOKEN: &str = "dynamo-test-admin-token";
/// The token of a user with no group and no rights but those a test binds to [`USER`].
pub(crate) const USER_TOKEN: &str = "dynamo-test-user-token";
/// The name of the user of [`USER_TOKEN`], for a RoleBinding's subject.
pub(crate) const USER: &str = "dynamo-user";
/// How long the control plane, a controller or a token may take to appear.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

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
pub(crate) struct ControlPlane {
    // Dropped in this order: the controllers, the API server, then etcd.
    _controllers: Option<Process>,
    api_server: Process,
    _etcd: LocalEtcd,
    dir: tempfile::TempDir,
    url: String,
}

impl ControlPlane {
    pub(crate) async fn start(controllers: bool) -> ControlPlane {
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
            &format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n{USER_TOKEN},{USER},{USER}\n"),
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
        let admin_file = plane.kubeconfig_file("admin", ADMIN_TOKEN);
        let controllers = spawn(
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={admin_file}"),
                // Deployments and their ReplicaSets; each namespace's `default` service
                // account; the service-account tokens the planner authenticates with; and the
                // garbage collector, which deletes what a deleted object owned.
                "--controllers=deployment,replicaset,serviceaccount,serviceaccount-token,garbagecollector".into(),
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

    /// Writes a kubeconfig for `user` with `token` that trusts the control plane's authority,
    /// as a user's `~/.kube/config` would be, and returns its path (for a process's
    /// `KUBECONFIG`).
    pub(crate) fn kubeconfig_file(&self, user: &str, token: &str) -> String {
        let ca = self.dir.path().join("ca.pem");
        let text = kubeconfig(&self.url, &ca, user, token);
        write(self.dir.path(), &format!("{user}.kubeconfig"), &text)
    }

    /// A client that authenticates with `token`, built from [`kubeconfig_file`](Self::kubeconfig_file).
    pub(crate) async fn client(&self, user: &str, token: &str) -> kube::Client {
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig_file(user, token)).expect("a kubeconfig");
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

    pub(crate) async fn admin(&self) -> kube::Client {
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
pub(crate) async fn poll<T, E>(
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
pub(crate) async fn wait_for<T>(what: &str, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    poll::<T, ()>(async || attempt().await.ok_or(None))
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

pub(crate) async fn create<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &from_json(object))
        .await
        .expect("created");
}

/// Defines `dynamographdeployments.nvidia.com`, a DynamoGraphDeployment-like resource whose
/// definition declares the `scale` subresource as docs/scaling.md asks (desired at
/// `.spec.replicas`, ready at `.status.readyReplicas`), and waits until the API server serves
/// it; returns the resource.
pub(crate) async fn define_graph_deployments(admin: &kube::Client) -> ApiResource {
    let definitions = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    create(
        &Api::<DynamicObject>::all_with(admin.clone(), &definitions),
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
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
    let graphs = Api::<DynamicObject>::all_with(admin.clone(), &resource);
    wait_for("the custom resource definition", async || {
        graphs.list(&ListParams::default()).await.ok()
    })
    .await;
    resource
}
