//! Discovery through Kubernetes Leases against a real API server (the control plane of
//! `dynamo-planner/tests/control_plane`, shared by its path): workers register and renew
//! Leases, and a watcher follows their joins, renewals, lapses, deletions and bad records. The
//! registry's user holds only the Role that the module's docs name. Built with the `kube`
//! feature; the Kubernetes binaries are found as `control_plane` says.
#![cfg(feature = "kube")]

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
#[path = "../../dynamo-planner/tests/control_plane/mod.rs"]
mod control_plane;

use std::time::Duration;

use dynamo_core::{WorkerId, WorkerRole};
use dynamo_transport::Error;
use dynamo_transport::discovery::{
    Discovery, KubernetesRegistry, MembershipStream, WorkerChange, WorkerRecord,
};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tower::discover::Change;

use control_plane::{ControlPlane, PATIENCE, USER, USER_TOKEN, create, wait_for};

const NAMESPACE: &str = "default";
const DEPLOYMENT: &str = "llama";
/// Short, so that a lapse shows within the test.
const TTL: Duration = Duration::from_secs(2);

fn record(worker: u64) -> WorkerRecord {
    WorkerRecord {
        id: WorkerId::new(worker),
        address: format!("10.0.0.{worker}:9000"),
        model: "llama".into(),
        block_size: 16,
        role: WorkerRole::Aggregated,
        kv_layout: None,
    }
}

/// The next item of `changes`, within [`PATIENCE`].
async fn next(changes: &mut MembershipStream) -> Result<WorkerChange, Error> {
    tokio::time::timeout(PATIENCE, changes.next())
        .await
        .expect("a membership change in time")
        .expect("the stream goes on")
}

fn joined(change: Result<WorkerChange, Error>) -> WorkerRecord {
    match change {
        Ok(Change::Insert(id, record)) if id == record.id => record,
        other => panic!("expected a join, got {other:?}"),
    }
}

fn departed(change: Result<WorkerChange, Error>) -> WorkerId {
    match change {
        Ok(Change::Remove(id)) => id,
        other => panic!("expected a departure, got {other:?}"),
    }
}

/// The Role that the discovery module's docs give a deployment's processes, bound to [`USER`].
async fn grant_documented_role(admin: &kube::Client) {
    let roles: Api<Role> = Api::namespaced(admin.clone(), NAMESPACE);
    create(
        &roles,
        json!({
            "metadata": {"name": "dynamo-discovery"},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "verbs": ["list", "watch", "create", "patch", "delete"]}],
        }),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), NAMESPACE);
    create(
        &bindings,
        json!({
            "metadata": {"name": "dynamo-discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "dynamo-discovery"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": USER}],
        }),
    )
    .await;
}

/// The `renewTime` of a Lease, as the API server has it.
async fn renewed_at(leases: &Api<Lease>, name: &str) -> Option<String> {
    let lease = leases.get(name).await.ok()?;
    let time = lease.spec?.renew_time?;
    Some(time.0.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_stay_while_renewing_and_leave_when_deleted_or_lapsed() {
    let plane = ControlPlane::start(false).await;
    let admin = plane.admin().await;
    grant_documented_role(&admin).await;
    let user = plane.client(USER, USER_TOKEN).await;
    let registry = KubernetesRegistry::new(user, NAMESPACE, DEPLOYMENT).expect("a valid name");
    let mut changes = registry.watch();

    let first = registry
        .register(&record(1), TTL)
        .await
        .expect("the documented Role lets a worker register");
    assert_eq!(joined(next(&mut changes).await), record(1));
    let second = registry.register(&record(2), TTL).await.expect("registers");
    assert_eq!(joined(next(&mut changes).await), record(2));

    // Renewals keep the first worker listed past its duration: wait for two renewals, more
    // than a TTL apart in all, and no departure comes meanwhile.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), NAMESPACE);
    let mut seen = vec![renewed_at(&leases, first.lease_name()).await];
    let mut every = tokio::time::interval(Duration::from_millis(100));
    tokio::time::timeout(PATIENCE, async {
        while seen.len() < 3 {
            every.tick().await;
            let now = renewed_at(&leases, first.lease_name()).await;
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    })
    .await
    .expect("the Lease is renewed twice");
    assert!(
        changes.next().now_or_never().is_none(),
        "no change while the Leases are renewed"
    );

    // Deregistering deletes the Lease: the worker leaves at once.
    second.deregister().await.expect("deregisters");
    assert_eq!(departed(next(&mut changes).await), WorkerId::new(2));

    // A worker whose renewals stop (its process died) leaves when its Lease lapses.
    let lease_name = first.lease_name().to_owned();
    drop(first);
    assert_eq!(departed(next(&mut changes).await), WorkerId::new(1));
    // Its Lease stays behind, and a new watcher does not take it for a live worker: the first
    // thing it reports is the third worker.
    assert!(
        leases.get(&lease_name).await.is_ok(),
        "the lapsed Lease stays"
    );
    let mut fresh = registry.watch();
    let _third = registry.register(&record(3), TTL).await.expect("registers");
    assert_eq!(joined(next(&mut fresh).await), record(3));
    assert_eq!(joined(next(&mut changes).await), record(3));

    // A Lease of the deployment that is not a worker's record is reported once, renewals or
    // not, and joins once mended.
    let bad = json!({
        "metadata": {"name": "llama-worker-9-0", "labels": {"dynamo/deployment": DEPLOYMENT},
                     "annotations": {"dynamo/worker-record": "not a record"}},
        "spec": {"leaseDurationSeconds": 60},
    });
    create(&leases, bad).await;
    let Err(Error::BadRecord { origin, .. }) = next(&mut changes).await else {
        panic!("a bad record is reported");
    };
    assert_eq!(origin, "Lease default/llama-worker-9-0");
    let renewal = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
    let mended = serde_json::to_string(&record(9)).expect("a record serialises");
    let mending = json!({"metadata": {"annotations": {"dynamo/worker-record": mended}}});
    for patch in [renewal, mending] {
        leases
            .patch(
                "llama-worker-9-0",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("the Lease is patched");
    }
    assert_eq!(joined(next(&mut changes).await), record(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_owned_by_its_pod_leaves_when_the_pod_is_deleted() {
    let plane = ControlPlane::start(true).await;
    let admin = plane.admin().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    // The namespace's `default` service account, which admission gives the pod, comes from
    // the controller manager: create the pod once it is there.
    let pod = wait_for("the pod to be created", async || {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "llama-worker"},
            "spec": {"containers": [{"name": "worker", "image": "dynamo-serve"}]},
        }))
        .ok()?;
        pods.create(&Default::default(), &pod).await.ok()
    })
    .await;
    let uid = pod.metadata.uid.expect("a created pod has a uid");
    let registry = KubernetesRegistry::in_default_namespace(admin.clone(), DEPLOYMENT)
        .expect("a valid name")
        .owned_by_pod("llama-worker", &uid);
    assert_eq!(registry.namespace(), NAMESPACE);
    let mut changes = registry.watch();
    // A long TTL: the worker leaves because its pod goes, not because its Lease lapses.
    let registration = registry
        .register(&record(1), Duration::from_secs(3600))
        .await
        .expect("registers");
    assert_eq!(joined(next(&mut changes).await), record(1));

    pods.delete("llama-worker", &DeleteParams::default())
        .await
        .expect("the pod is deleted");
    assert_eq!(departed(next(&mut changes).await), WorkerId::new(1));
    let leases: Api<Lease> = Api::namespaced(admin, NAMESPACE);
    assert!(
        leases.get(registration.lease_name()).await.is_err(),
        "the garbage collector deleted the Lease"
    );
}

#[test]
fn a_deployment_name_that_cannot_label_a_lease_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    for name in ["", "Llama", "llama_3", "-llama", &"a".repeat(64)] {
        let Err(error) = KubernetesRegistry::new(client.clone(), NAMESPACE, name) else {
            panic!("{name:?} is refused");
        };
        assert_eq!(error.name(), "bad_deployment_name");
        assert!(error.to_string().contains("lowercase letters"));
    }
    assert!(KubernetesRegistry::new(client, NAMESPACE, "llama-3").is_ok());
}
