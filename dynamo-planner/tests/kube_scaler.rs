//! `KubernetesScaler` against recorded Kubernetes API responses.
//!
//! A small HTTP server on a loopback port answers the requests the scaler should make with
//! recorded responses (`tests/fixtures/kube/`) and keeps what it received, so that each request
//! is checked to the byte; a real `kube::Client`, without TLS or authentication, talks to it.
//! `tests/kube_api_server.rs` runs the scaler against a real control plane. What the two cover:
//! `docs/scaling.md`, "Kubernetes".
#![cfg(feature = "kube")]

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use dynamo_core::WorkerRole;
use dynamo_planner::kube::KubernetesScaler;
use dynamo_planner::{Error, PoolSize, Scaler};
use kube::api::{ApiResource, GroupVersionKind};

const DEPLOYMENT: &str = include_str!("fixtures/kube/deployment.json");
const SCALE: &str = include_str!("fixtures/kube/scale.json");
const GRAPH_SCALE: &str = include_str!("fixtures/kube/graph-scale.json");
const NOT_FOUND: &str = include_str!("fixtures/kube/not-found.json");

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/dynamo/deployments";
const GRAPHS: &str = "/apis/nvidia.com/v1alpha1/namespaces/dynamo/dynamographdeployments";

/// One request the fake API server received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: Method,
    path: String,
    /// The query's non-empty `key=value` pairs (kube writes `?&fieldManager=…`).
    query: Vec<String>,
    content_type: Option<String>,
    body: String,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// The recorded response for a request: the fixture, or the API server's 404 `Status`.
fn respond(method: &Method, path: &str) -> (StatusCode, &'static str) {
    let deployment = format!("{DEPLOYMENTS}/llama-decode");
    let graph = format!("{GRAPHS}/llama-prefill/scale");
    match (method.as_str(), path) {
        ("GET", p) if p == deployment => (StatusCode::OK, DEPLOYMENT),
        ("PATCH", p) if p == format!("{deployment}/scale") => (StatusCode::OK, SCALE),
        ("GET" | "PATCH", p) if p == graph => (StatusCode::OK, GRAPH_SCALE),
        _ => (StatusCode::NOT_FOUND, NOT_FOUND),
    }
}

/// Starts the fake API server on a free loopback port; returns a scaler pointed at it (prefill
/// on a custom resource, decode on a Deployment, aggregated on a missing Deployment) and the
/// log of requests.
async fn fake_api_server() -> (KubernetesScaler, Log) {
    let log = Log::default();
    let received = Arc::clone(&log);
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let received = Arc::clone(&received);
            async move {
                let (status, json) = respond(&method, uri.path());
                received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Received {
                        method,
                        path: uri.path().to_owned(),
                        query: uri
                            .query()
                            .into_iter()
                            .flat_map(|query| query.split('&'))
                            .filter(|pair| !pair.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        content_type: headers
                            .get(header::CONTENT_TYPE)
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                let response: Response =
                    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response();
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let address = listener.local_addr().expect("the port");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{address}").parse().expect("a URL");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("a client");
    let graph = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nvidia.com", "v1alpha1", "DynamoGraphDeployment"),
        "dynamographdeployments",
    );
    let scaler = KubernetesScaler::new(client, "dynamo")
        .with_deployment(WorkerRole::Decode, "llama-decode")
        .with_deployment(WorkerRole::Aggregated, "llama-missing")
        .with_custom_resource(WorkerRole::Prefill, graph, "llama-prefill");
    (scaler, log)
}

fn taken(log: &Log) -> Vec<Received> {
    std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

#[tokio::test]
async fn size_reads_desired_from_spec_and_ready_from_the_deployment_status() {
    let (scaler, log) = fake_api_server().await;
    let size = scaler.size(WorkerRole::Decode).await.expect("the size");
    assert_eq!(
        size,
        PoolSize {
            desired: 4,
            ready: 2
        }
    );
    let requests = taken(&log);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].path, format!("{DEPLOYMENTS}/llama-decode"));
}

#[tokio::test]
async fn scale_sends_a_merge_patch_to_the_scale_subresource() {
    let (scaler, log) = fake_api_server().await;
    scaler.scale(WorkerRole::Decode, 6).await.expect("scaled");
    let requests = taken(&log);
    assert_eq!(
        requests,
        [Received {
            method: Method::PATCH,
            path: format!("{DEPLOYMENTS}/llama-decode/scale"),
            query: vec!["fieldManager=dynamo-planner".to_owned()],
            content_type: Some("application/merge-patch+json".to_owned()),
            body: r#"{"spec":{"replicas":6}}"#.to_owned(),
        }]
    );
}

#[tokio::test]
async fn a_custom_resource_is_read_and_scaled_through_its_scale_subresource() {
    let (scaler, log) = fake_api_server().await;
    let size = scaler.size(WorkerRole::Prefill).await.expect("the size");
    assert_eq!(
        size,
        PoolSize {
            desired: 3,
            ready: 2
        }
    );
    scaler.scale(WorkerRole::Prefill, 5).await.expect("scaled");
    let requests = taken(&log);
    let path = format!("{GRAPHS}/llama-prefill/scale");
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (&requests[0].method, &requests[0].path),
        (&Method::GET, &path)
    );
    assert_eq!(
        (&requests[1].method, &requests[1].path),
        (&Method::PATCH, &path)
    );
    assert_eq!(
        requests[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(requests[1].body, r#"{"spec":{"replicas":5}}"#);
}

#[tokio::test]
async fn a_missing_deployment_is_a_scale_error_that_names_it() {
    let (scaler, log) = fake_api_server().await;
    for result in [
        scaler.size(WorkerRole::Aggregated).await.map(|_| ()),
        scaler.scale(WorkerRole::Aggregated, 2).await,
    ] {
        let Err(Error::Scale {
            pool,
            message,
            source,
        }) = result
        else {
            panic!("expected a scale error, got {result:?}");
        };
        assert_eq!(pool, WorkerRole::Aggregated);
        assert_eq!(
            message,
            r#"deployment `dynamo/llama-missing` not found: deployments.apps "llama-missing" not found"#
        );
        let source = source.expect("the API error");
        assert!(
            matches!(source.downcast_ref::<kube::Error>(), Some(kube::Error::Api(status)) if status.code == 404)
        );
    }
    assert_eq!(taken(&log).len(), 2);
}

#[tokio::test]
async fn a_pool_without_a_resource_is_a_scale_error() {
    // Nothing listens on the discard port: a request would fail with another message.
    let url = "http://127.0.0.1:9".parse().expect("a URL");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("a client");
    let scaler = KubernetesScaler::new(client, "dynamo");
    let error = scaler
        .size(WorkerRole::Decode)
        .await
        .expect_err("no resource for the pool");
    assert!(
        matches!(&error, Error::Scale { pool: WorkerRole::Decode, message, .. }
            if message == "no Kubernetes resource is configured for this pool"),
        "{error:?}"
    );
}
