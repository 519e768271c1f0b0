//! `dynamo-serve planner --kubernetes-deployment` against a real Kubernetes API server (the
//! control plane of `dynamo-planner/tests/control_plane`, shared by its path): the planner
//! reads its kubeconfig from `KUBECONFIG`, observes real mocker workers through NATS and their
//! registry, and grows and shrinks their Deployment, or a custom resource with a `scale`
//! subresource (`--kubernetes-resource`), through the API server. The workers register in a
//! directory beside the Deployment, and as Kubernetes Leases beside the custom resource
//! (`--kubernetes-discovery`, which the frontend and the planner watch too).
//!
//! There are no nodes, so the test plays them: it keeps as many worker processes running as the
//! object asks for (through the planner crate's local-process scaler) and writes how many are
//! ready into its status, as the Deployment controller (or the resource's operator) and the
//! kubelets would. Built with the `kube` feature; the Kubernetes binaries are found as
//! `control_plane` says.
#![cfg(feature = "kube")]

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

#[path = "../../dynamo-planner/tests/control_plane/mod.rs"]
mod control_plane;

use std::time::Duration;

use dynamo_core::WorkerRole;
use dynamo_planner::Scaler;
use dynamo_planner::local::{Listed, LocalProcesses, RegistryDirectory, WorkerTemplate};
use dynamo_transport::discovery::KubernetesRegistry;
use dynamo_transport::local::LocalNats;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;
use tokio::sync::oneshot;

use control_plane::{ADMIN_TOKEN, ControlPlane, create, define_graph_deployments, wait_for};
use support::{Process, fill_kv_cache, frontend_with_env};

const NAMESPACE: &str = "dynamo";
/// The name of the Deployment or custom resource.
const NAME: &str = "llama";
const POOL: WorkerRole = WorkerRole::Aggregated;

/// The namespace's Deployments, read as JSON.
fn deployments(client: kube::Client) -> Api<DynamicObject> {
    let kind = GroupVersionKind::gvk("apps", "v1", "Deployment");
    let resource = ApiResource::from_gvk_with_plural(&kind, "deployments");
    Api::namespaced_with(client, NAMESPACE, &resource)
}

/// The replicas the object (Deployment or custom resource) asks for.
async fn replicas(objects: &Api<DynamicObject>) -> Option<u64> {
    let object = objects.get(NAME).await.ok()?;
    object.data["spec"]["replicas"].as_u64()
}

/// Waits until the object asks for `count` replicas.
async fn replicas_become(objects: &Api<DynamicObject>, count: u64) {
    wait_for(&format!("{count} replicas"), async || {
        (replicas(objects).await == Some(count)).then_some(())
    })
    .await;
}

/// Plays the Deployment controller (or the custom resource's operator) and the kubelets until
/// `stop`: every 100 ms, keeps as many workers running as the object asks for, and writes how
/// many are ready (registered) into its status; then stops the workers.
async fn play_the_nodes(
    objects: Api<DynamicObject>,
    workers: LocalProcesses,
    mut stop: oneshot::Receiver<()>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let mut running = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => break,
        }
        let Some(wanted) = replicas(&objects).await else {
            continue;
        };
        let wanted = usize::try_from(wanted).expect("a replica count");
        if wanted != running {
            workers.scale(POOL, wanted).await.expect("workers start");
            running = wanted;
        }
        let ready = workers.size(POOL).await.expect("the registry").ready;
        let status = json!({"status": {"replicas": running, "readyReplicas": ready}});
        objects
            .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("the status written");
    }
    workers.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_command_grows_and_shrinks_a_kubernetes_deployment() {
    let plane = ControlPlane::start(false).await;
    let admin = in_a_namespace(&plane).await;
    let deployments = deployments(admin);
    // No replicas yet: the planner brings the Deployment up to --min-workers.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {"containers": [{"name": "worker", "image": "dynamo-serve"}]},
            },
        },
    });
    create(&deployments, deployment).await;
    grows_and_shrinks(&plane, deployments, &[], Registry::Directory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_command_grows_and_shrinks_a_custom_resource_with_a_scale_subresource() {
    let plane = ControlPlane::start(false).await;
    let admin = in_a_namespace(&plane).await;
    let resource = define_graph_deployments(&admin).await;
    let graphs = Api::namespaced_with(admin, NAMESPACE, &resource);
    let graph = json!({
        "apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
        "metadata": {"name": NAME},
        "spec": {"replicas": 0},
    });
    create(&graphs, graph).await;
    let kind = "dynamographdeployments.v1alpha1.nvidia.com";
    let flags = ["--kubernetes-resource", kind];
    grows_and_shrinks(&plane, graphs, &flags, Registry::KubernetesLeases).await;
}

/// The administrator's client, once it has created the namespace.
async fn in_a_namespace(plane: &ControlPlane) -> kube::Client {
    let admin = plane.admin().await;
    let namespace = GroupVersionKind::gvk("", "v1", "Namespace");
    let namespaces =
        Api::<DynamicObject>::all_with(admin.clone(), &ApiResource::from_gvk(&namespace));
    let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    create(&namespaces, object).await;
    admin
}

/// Where the workers register, and the frontend and the planner find them.
enum Registry {
    /// `--registry DIR`.
    Directory,
    /// `--kubernetes-discovery`: Leases in the namespace.
    KubernetesLeases,
}

/// `dynamo-serve planner --kubernetes-deployment NAME` with `flags`, over mocker workers that
/// the test runs as `objects` asks (the nodes) and that register in `registry`: it brings the
/// object from 0 replicas to 1, grows it to 2 under load and shrinks it to 1 when calm;
/// stopped, it leaves it at 1.
async fn grows_and_shrinks(
    plane: &ControlPlane,
    objects: Api<DynamicObject>,
    flags: &[&str],
    registry: Registry,
) {
    let nats = LocalNats::start().expect("nats-server starts");
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-kubernetes-")
        .tempdir()
        .expect("a temporary directory");
    let kubeconfig = plane.kubeconfig_file("admin", ADMIN_TOKEN);
    let directory = temporary.path().join("registry").display().to_string();
    // Where the workers register and the frontend finds them; the planner's flags name the
    // namespace already, for the object.
    let (discovery, planner_discovery) = match registry {
        Registry::Directory => {
            let flags = vec!["--registry", directory.as_str()];
            (flags.clone(), flags)
        }
        Registry::KubernetesLeases => (
            vec![
                "--kubernetes-discovery",
                "--kubernetes-namespace",
                NAMESPACE,
            ],
            vec!["--kubernetes-discovery"],
        ),
    };
    // Small KV caches (64 blocks of 16 tokens): three long prompts fill one worker's.
    let workers = WorkerTemplate::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(["worker", "--engine", "mocker", "--speedup", "0.2"])
        .args([
            "--kv-blocks",
            "64",
            "--drain-timeout",
            "30",
            "--exit-with-parent",
        ])
        .args(&discovery)
        .args(["--nats", &nats.url()])
        .env("KUBECONFIG", &kubeconfig)
        .log_dir(temporary.path().join("logs"));
    let (stop, stopped) = oneshot::channel();
    // The nodes count a worker ready once it is listed where the frontend finds it.
    let nodes = match registry {
        Registry::Directory => LocalProcesses::new(RegistryDirectory::new(&directory)),
        Registry::KubernetesLeases => {
            let leases = KubernetesRegistry::new(plane.admin().await, NAMESPACE, "dynamo")
                .expect("the default deployment name labels Leases");
            LocalProcesses::new(Listed::follow(&leases))
        }
    };
    let workers = nodes.with_pool(POOL, workers);
    let nodes = tokio::spawn(play_the_nodes(objects.clone(), workers, stopped));

    let url = nats.url();
    let mut args = vec!["planner", "--kubernetes-deployment", NAME];
    args.extend(["--kubernetes-namespace", NAMESPACE]);
    args.extend_from_slice(&planner_discovery);
    args.extend(["--nats", &url, "--interval", "1", "--max-workers", "2"]);
    args.extend_from_slice(flags);
    let mut planner = Process::start_with_env(&args, &[("KUBECONFIG", &kubeconfig)]);
    replicas_become(&objects, 1).await;
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let (frontend_process, frontend) = frontend_with_env(&discovery, &env).await;
    frontend_process
        .wait_for("worker 1/0 at", Duration::from_secs(60))
        .await;

    // Under load the planner asks for a second replica; its worker joins.
    let streams = fill_kv_cache(&frontend, 400).await;
    replicas_become(&objects, 2).await;
    frontend_process
        .wait_for("worker 2/0 at", Duration::from_secs(60))
        .await;
    assert!(planner.logged("grow by one to 2"));

    // Without load (the streams dropped, which cancels them) it asks for one again.
    drop(streams);
    replicas_become(&objects, 1).await;
    frontend_process
        .wait_for("worker 2/0 left", Duration::from_secs(60))
        .await;
    assert!(planner.logged("shrink by one to 1"));

    // SIGTERM stops the planner; the object keeps its replica, and its worker serves.
    planner.terminate();
    let status = planner.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(replicas(&objects).await, Some(1));
    let (status, body) = frontend.complete("after the planner", 2).await;
    assert_eq!(status, 200, "{body}");

    stop.send(()).expect("the nodes still play");
    nodes.await.expect("the nodes stop");
}
