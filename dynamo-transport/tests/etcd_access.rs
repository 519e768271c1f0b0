//! Discovery through an etcd that asks for a user (auth enabled through its own API) or serves
//! HTTPS: the right access registers and watches, the wrong one is refused, and no password
//! reaches an error message.

use std::time::Duration;

use bytes::Bytes;
use dynamo_core::{WorkerId, WorkerRole};
use dynamo_transport::Error;
use dynamo_transport::discovery::{
    Discovery, EtcdAccess, EtcdDiscovery, EtcdRegistration, WorkerRecord,
};
use dynamo_transport::local::{LocalAuthority, LocalEtcd};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::discover::Change;

fn record() -> WorkerRecord {
    WorkerRecord {
        id: WorkerId::new(7),
        address: "127.0.0.1:9007".into(),
        model: "echo".into(),
        block_size: 16,
        role: WorkerRole::Aggregated,
        kv_layout: None,
    }
}

/// Watch `discovery` until worker 7 joins.
async fn sees_worker(discovery: &EtcdDiscovery) {
    let mut changes = discovery.watch();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a change in time")
        .expect("the watch goes on")
        .expect("a change, not an error");
    assert!(matches!(change, Change::Insert(id, _) if id == WorkerId::new(7)));
}

/// POST `body` to etcd's JSON gateway at `url` (plain HTTP, no token).
async fn admin(url: &str, path: &str, body: Value) -> Value {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::post(format!("{url}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request");
    let response = http.request(request).await.expect("etcd answers");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_auth_takes_the_user_from_the_url_and_never_shows_the_password() {
    let etcd = LocalEtcd::start().expect("etcd starts");
    let url = etcd.url();
    admin(
        &url,
        "/v3/auth/user/add",
        json!({"name": "root", "password": "r00t-pw"}),
    )
    .await;
    admin(&url, "/v3/auth/role/add", json!({"name": "root"})).await;
    admin(
        &url,
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
    )
    .await;
    let enabled = admin(&url, "/v3/auth/enable", json!({})).await;
    assert!(enabled.get("error").is_none(), "{enabled}");
    let ttl = Duration::from_secs(5);
    let port = url.rsplit(':').next().expect("a port");

    let anonymous = EtcdRegistration::register(&url, "test", &record(), ttl).await;
    assert!(
        matches!(anonymous, Err(Error::RegistryUnavailable { .. })),
        "{anonymous:?}"
    );
    let wrong = format!("http://root:wr0ng-pw@127.0.0.1:{port}");
    let error = EtcdRegistration::register(&wrong, "test", &record(), ttl)
        .await
        .expect_err("a wrong password is refused");
    assert!(
        !format!("{error} {error:?}").contains("wr0ng-pw"),
        "{error:?}"
    );

    let right = format!("http://root:r00t-pw@127.0.0.1:{port}");
    let _registered = EtcdRegistration::register(&right, "test", &record(), ttl)
        .await
        .expect("registered");
    let discovery = EtcdDiscovery::new(&right, "test").expect("an endpoint");
    assert!(!format!("{discovery:?}").contains("r00t-pw"));
    sees_worker(&discovery).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_serving_https_is_trusted_through_its_authority() {
    let authority = LocalAuthority::new().expect("an authority");
    let identity = authority.issue(&["127.0.0.1"]).expect("a certificate");
    let dir = std::env::temp_dir().join(format!("dynamo-etcd-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    };
    let ca = write("ca.pem", &authority.pem());
    let (cert, key) = (
        write("etcd.pem", &identity.cert),
        write("etcd.key", &identity.key),
    );
    let etcd = LocalEtcd::start_tls(&cert, &key).expect("etcd starts");
    let url = etcd.url();
    assert!(url.starts_with("https://"));
    let ttl = Duration::from_secs(5);

    let no_authority = EtcdDiscovery::new(&url, "test").expect_err("https needs an authority");
    assert!(matches!(no_authority, Error::BadEndpoint { .. }));
    let stranger = LocalAuthority::new().expect("an authority");
    let other_ca = write("other.pem", &stranger.pem());
    let distrustful = EtcdAccess {
        root_certificate: Some(other_ca),
        ..EtcdAccess::default()
    };
    let refused = EtcdRegistration::register_with(&url, "test", &record(), ttl, &distrustful).await;
    assert!(
        matches!(refused, Err(Error::RegistryUnavailable { .. })),
        "{refused:?}"
    );

    let access = EtcdAccess {
        root_certificate: Some(ca),
        ..EtcdAccess::default()
    };
    let _registered = EtcdRegistration::register_with(&url, "test", &record(), ttl, &access)
        .await
        .expect("registered over HTTPS");
    let discovery = EtcdDiscovery::new_with(&url, "test", &access).expect("an endpoint");
    sees_worker(&discovery).await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
