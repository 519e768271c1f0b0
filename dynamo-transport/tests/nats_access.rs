//! NATS that asks for credentials or TLS (a real `nats-server` started with `--user`/`--pass`,
//! or with `--tls`): the right access connects and carries events, the wrong one is refused,
//! and no password reaches an error message.

use std::path::PathBuf;
use std::time::Duration;

use dynamo_core::{KvEvent, KvEventData, StorageTier, WorkerId};
use dynamo_transport::events::{EventPlane, NatsAccess, NatsEvents};
use dynamo_transport::local::{LocalAuthority, LocalNats};
use futures::StreamExt;

/// Whether an event published through `nats` comes back to its own subscription.
async fn round_trip(nats: &NatsEvents) {
    let mut events = nats.subscribe::<KvEvent>().await.expect("subscribed");
    let event = KvEvent {
        worker: WorkerId::new(7),
        event_id: 1,
        tier: StorageTier::Device,
        data: KvEventData::Cleared,
    };
    nats.publish(&event).await.expect("published");
    let received = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the event arrives")
        .expect("open")
        .expect("well formed");
    assert_eq!(received, event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_password_takes_it_from_the_url_and_the_password_is_never_shown() {
    let server = LocalNats::start_with(&["--user", "dyn", "--pass", "s3cret"]).expect("starts");
    let port = server.port();

    let anonymous = NatsEvents::connect(&server.url(), "test").await;
    assert!(anonymous.is_err(), "connected without a password");
    let wrong = format!("nats://dyn:wrong-pass@127.0.0.1:{port}");
    let error = NatsEvents::connect(&wrong, "test")
        .await
        .expect_err("a wrong password is refused");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("wrong-pass"), "{shown}");
    assert!(
        shown.contains(&format!("nats://127.0.0.1:{port}")),
        "{shown}"
    );

    let right = format!("nats://dyn:s3cret@127.0.0.1:{port}");
    let nats = NatsEvents::connect(&right, "test")
        .await
        .expect("connected");
    round_trip(&nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_is_trusted_through_its_authority() {
    let authority = LocalAuthority::new().expect("an authority");
    let identity = authority.issue(&["127.0.0.1"]).expect("a certificate");
    let dir = std::env::temp_dir().join(format!("dynamo-nats-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    };
    let ca: PathBuf = write("ca.pem", &authority.pem());
    let cert = write("server.pem", &identity.cert);
    let key = write("server.key", &identity.key);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server =
        LocalNats::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]).expect("starts");
    let url = format!("tls://127.0.0.1:{}", server.port());

    let untrusting = NatsEvents::connect(&url, "test").await;
    assert!(untrusting.is_err(), "trusted a certificate from nowhere");

    let access = NatsAccess {
        root_certificate: Some(ca),
        require_tls: true,
        ..NatsAccess::default()
    };
    let nats = NatsEvents::connect_with(&url, "test", &access)
        .await
        .expect("connected over TLS");
    round_trip(&nats).await;
    let _ = std::fs::remove_dir_all(&dir);
}
