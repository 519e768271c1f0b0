//! Discovery against real registries: an `etcd` started here (Debian package `etcd-server`)
//! and a directory of JSON records; and the worker engines they lead to over the TCP request
//! plane.

use std::time::{Duration, Instant};

use dynamo_core::{
    BlockSize, EchoEngine, EngineExt, GenerateRequest, KvLayout, WorkerId, WorkerRole,
};
use dynamo_transport::discovery::{
    ConnectConfig, DirectoryDiscovery, DirectoryRegistration, Discovery, EtcdDiscovery,
    EtcdRegistration, MembershipStream, StaticDiscovery, WorkerRecord, connect,
};
use dynamo_transport::local::LocalEtcd;
use dynamo_transport::{Error, Tcp, Transport};
use futures::{Stream, StreamExt};
use tower::discover::Change;

/// A membership change, comparable.
#[derive(Debug, PartialEq)]
enum Membership {
    Joined(WorkerRecord),
    Left(WorkerId),
}

fn record(id: u64, port: u16) -> WorkerRecord {
    WorkerRecord {
        id: WorkerId::new(id),
        address: format!("127.0.0.1:{port}"),
        model: "echo".into(),
        block_size: 16,
        role: WorkerRole::Aggregated,
        kv_layout: None,
    }
}

/// An echo engine served over `transport`: its address, and the task serving it.
async fn serve_echo(
    transport: &Tcp,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), dynamo_core::Error>>,
) {
    let served = transport
        .serve(EchoEngine::new().boxed_engine())
        .await
        .expect("served");
    (served.address.clone(), tokio::spawn(served.serving))
}

/// The next item, or a failure after `within`.
async fn next<T>(stream: &mut (impl Stream<Item = T> + Unpin), within: Duration) -> T {
    tokio::time::timeout(within, stream.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

async fn next_change(changes: &mut MembershipStream) -> Membership {
    match next(changes, Duration::from_secs(10))
        .await
        .expect("a change, not an error")
    {
        Change::Insert(id, record) => {
            assert_eq!(id, record.id);
            Membership::Joined(record)
        }
        Change::Remove(id) => Membership::Left(id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_reports_joins_deregistrations_and_expired_leases() {
    let etcd = LocalEtcd::start().expect("etcd starts (Debian package etcd-server)");
    let ttl = Duration::from_secs(2);
    let first = EtcdRegistration::register(&etcd.url(), "test", &record(1, 9001), ttl)
        .await
        .expect("registered");

    let discovery = EtcdDiscovery::new(&etcd.url(), "test").expect("an endpoint");
    let mut changes = discovery.watch();
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Joined(record(1, 9001))
    );

    // A worker that joins later is seen through the watch.
    let second = EtcdRegistration::register(&etcd.url(), "test", &record(2, 9002), ttl)
        .await
        .expect("registered");
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Joined(record(2, 9002))
    );

    // The keep-alive holds a registration well past its TTL: the fixed wait of two TTLs (real
    // time: the lease expires in etcd) is what is tested.
    tokio::time::sleep(ttl * 2).await;
    let quiet = tokio::time::timeout(Duration::from_millis(100), changes.next()).await;
    assert!(quiet.is_err(), "no change while both are alive: {quiet:?}");

    // Deregistering is seen at once.
    second.deregister().await.expect("deregistered");
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Left(WorkerId::new(2))
    );

    // A registration whose keeper stops (a dead process) expires with its lease.
    let stopped = Instant::now();
    drop(first);
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Left(WorkerId::new(1))
    );
    let gone_after = stopped.elapsed();
    assert!(
        gone_after <= ttl + Duration::from_secs(2),
        "left after {gone_after:?}"
    );

    // Another namespace sees none of it (an absence, watched for a fixed while).
    let other = EtcdDiscovery::new(&etcd.url(), "other").expect("an endpoint");
    let mut nothing = other.watch();
    let quiet = tokio::time::timeout(Duration::from_millis(300), nothing.next()).await;
    assert!(quiet.is_err(), "nothing in another namespace: {quiet:?}");
}

#[tokio::test]
async fn etcd_endpoints_must_be_http_addresses() {
    for endpoint in ["127.0.0.1:2379", "https://etcd:2379", "not a url"] {
        let error = EtcdDiscovery::new(endpoint, "test").expect_err("refused");
        assert!(matches!(error, Error::BadEndpoint { .. }), "{error}");
    }
    let unreachable = EtcdRegistration::register(
        "http://127.0.0.1:1",
        "test",
        &record(1, 9001),
        Duration::from_secs(2),
    )
    .await
    .expect_err("nobody listens on port 1");
    assert!(
        matches!(unreachable, Error::RegistryUnavailable { .. }),
        "{unreachable}"
    );
}

#[tokio::test]
async fn a_directory_reports_records_as_files_come_and_go() {
    let directory = std::env::temp_dir().join(format!("dynamo-discovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let discovery =
        DirectoryDiscovery::new(&directory).with_poll_interval(Duration::from_millis(20));
    let mut changes = discovery.watch();

    let first = DirectoryRegistration::register(&directory, &record(1, 9001)).expect("written");
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Joined(record(1, 9001))
    );

    // A file that is not a record is reported once and skipped; the others still come.
    std::fs::write(directory.join("broken.json"), "{\"id\": ").expect("written");
    let error = next(&mut changes, Duration::from_secs(5))
        .await
        .expect_err("a bad record");
    assert!(
        matches!(&error, Error::BadRecord { origin, .. } if origin.ends_with("broken.json")),
        "{error}"
    );
    let second = DirectoryRegistration::register(&directory, &record(2, 9002)).expect("written");
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Joined(record(2, 9002))
    );

    // Rewriting a record is a departure and a new join.
    drop(second);
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Left(WorkerId::new(2))
    );
    let moved = DirectoryRegistration::register(&directory, &record(1, 9009)).expect("written");
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Left(WorkerId::new(1))
    );
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Joined(record(1, 9009))
    );
    drop((first, moved));
    assert_eq!(
        next_change(&mut changes).await,
        Membership::Left(WorkerId::new(1))
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_workers_follow_discovery_over_the_request_plane() {
    let etcd = LocalEtcd::start().expect("etcd starts (Debian package etcd-server)");
    let transport = Tcp::new();
    let mut records = Vec::new();
    let mut servers = Vec::new();
    for id in 1..=2 {
        let (address, server) = serve_echo(&transport).await;
        records.push(WorkerRecord {
            address,
            ..record(id, 0)
        });
        servers.push(server);
    }
    let mut registrations = Vec::new();
    for record in &records {
        let registration =
            EtcdRegistration::register(&etcd.url(), "test", record, Duration::from_secs(2))
                .await
                .expect("registered");
        registrations.push(registration);
    }
    // A worker with another block size is refused: it never comes out as an engine.
    let mut odd = record(3, 9003);
    odd.block_size = 32;
    let _odd = EtcdRegistration::register(&etcd.url(), "test", &odd, Duration::from_secs(2))
        .await
        .expect("registered");

    let block_size = BlockSize::new(16).expect("not zero");
    let discovery = EtcdDiscovery::new(&etcd.url(), "test").expect("an endpoint");
    let mut workers = connect(&discovery, transport, ConnectConfig::new(block_size));
    let mut engines = Vec::new();
    while engines.len() < 2 {
        match next(&mut workers, Duration::from_secs(10)).await {
            Ok(Change::Insert(id, engine)) => engines.push((id, engine)),
            other => panic!("unexpected change {:?}", other.map(|change| key(&change))),
        }
    }
    engines.sort_by_key(|(id, _)| *id);
    assert_eq!(
        engines.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [WorkerId::new(1), WorkerId::new(2)]
    );
    for (n, (_, engine)) in engines.iter_mut().enumerate() {
        let request =
            GenerateRequest::new(format!("r{n}"), "echo", vec![5, 6, 7]).with_max_tokens(2);
        let generation = engine.generate_all(request).await.expect("served");
        assert_eq!(generation.tokens, [5, 6]);
    }

    // Deregistering removes the worker.
    let leaving = registrations.remove(0);
    leaving.deregister().await.expect("deregistered");
    match next(&mut workers, Duration::from_secs(10)).await {
        Ok(Change::Remove(id)) => assert_eq!(id, WorkerId::new(1)),
        other => panic!("unexpected change {:?}", other.map(|change| key(&change))),
    }

    // A worker whose server stops is removed at once, before its lease ends.
    servers[1].abort();
    let _ = (&mut servers[1]).await;
    match next(&mut workers, Duration::from_secs(10)).await {
        Ok(Change::Remove(id)) => assert_eq!(id, WorkerId::new(2)),
        other => panic!("unexpected change {:?}", other.map(|change| key(&change))),
    }
}

/// A change's kind and worker, for messages.
fn key<S>(change: &Change<WorkerId, S>) -> (&'static str, WorkerId) {
    match change {
        Change::Insert(id, _) => ("insert", *id),
        Change::Remove(id) => ("remove", *id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disaggregated_pool_refuses_other_roles_and_layouts_at_join_time() {
    let transport = Tcp::new();
    let layout = KvLayout::new("echo", 16, 30, 3, 64, "f32");
    let mut records = Vec::new();
    let mut servers = Vec::new();
    // Refused: a decode worker, a prefill worker of another layout, one that gives none; then
    // the one that pairs. Every one of them answers, so only the refusal keeps them out.
    let variants: [(WorkerRole, Option<KvLayout>); 4] = [
        (WorkerRole::Decode, Some(layout.clone())),
        (
            WorkerRole::Prefill,
            Some(KvLayout {
                dtype: "bf16".into(),
                ..layout.clone()
            }),
        ),
        (WorkerRole::Prefill, None),
        (WorkerRole::Prefill, Some(layout.clone())),
    ];
    for (id, (role, kv_layout)) in (1..).zip(variants) {
        let (address, server) = serve_echo(&transport).await;
        records.push(WorkerRecord {
            address,
            role,
            kv_layout,
            ..record(id, 0)
        });
        servers.push(server);
    }
    let block_size = BlockSize::new(16).expect("not zero");
    let config = ConnectConfig::new(block_size)
        .roles([WorkerRole::Prefill])
        .kv_layout(layout);
    let mut workers = connect(&StaticDiscovery::new(records), transport, config);
    match next(&mut workers, Duration::from_secs(10)).await {
        Ok(Change::Insert(id, _)) => assert_eq!(id, WorkerId::new(4)),
        other => panic!("unexpected change {:?}", other.map(|change| key(&change))),
    }
    for server in servers {
        server.abort();
    }
}
