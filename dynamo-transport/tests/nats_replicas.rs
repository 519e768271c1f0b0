//! Router replicas sharing their state over a real NATS server (started here on a free
//! loopback port): one replica's bookings and predictions reach the other, its releases too,
//! a replica that joins mid-stream catches up from a snapshot, and replicas of another pool,
//! sharing within the namespace (`NatsEvents::within`), hear none of it.

use std::time::{Duration, Instant};

use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest, ReplicaId, WorkerId};
use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
use dynamo_router::{ApproxConfig, ApproxIndex, KvCost, RouteRequest, RouterService};
use dynamo_transport::events::{NatsEvents, exchange_replica_messages};
use dynamo_transport::local::LocalNats;

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// A router replica: its router over two echo workers, its shared state, its predictions.
struct Replica {
    router: RouterService,
    state: ReplicaState,
    approx: ApproxIndex,
}

/// Start replica `id`, sharing its state over the NATS server at `url`, and ask the others for
/// theirs.
async fn replica(url: &str, id: u64) -> Replica {
    let nats = NatsEvents::connect(url, "test").await.expect("connected");
    replica_on(nats, id).await
}

/// Start replica `id`, sharing its state on `nats`.
async fn replica_on(nats: NatsEvents, id: u64) -> Replica {
    let state = ReplicaState::new(ReplicaConfig::new(ReplicaId(id)));
    let approx = ApproxIndex::new(block_size(), ApproxConfig::default());
    let router = RouterService::builder(block_size())
        .policy(KvCost::default())
        .load_tracker(state.load())
        .overlap_source(state.predictions(approx.clone()))
        .build();
    for worker in 1..=2 {
        router.insert_worker(WorkerId::new(worker), EchoEngine::new());
    }
    let outgoing = futures::stream::unfold(state.clone(), |state| async move {
        Some((state.next_message().await, state))
    });
    let receiver = state.clone();
    let exchange = exchange_replica_messages(&nats, state.id(), outgoing, move |message| {
        receiver.apply(&message, Instant::now());
    })
    .await
    .expect("subscribed");
    tokio::spawn(exchange);
    let ticking = state.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(ticking.config().digest_interval);
        loop {
            ticks.tick().await;
            ticking.tick(Instant::now());
        }
    });
    state.join();
    Replica {
        router,
        state,
        approx,
    }
}

/// Wait until `condition` holds, for at most twenty seconds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn request(id: &str) -> GenerateRequest {
    GenerateRequest::new(id, "echo", (0..16).collect::<Vec<u32>>()).with_max_tokens(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_bookings_and_predictions_and_a_late_one_catches_up() {
    let server = LocalNats::start().expect("nats-server starts");
    let a = replica(&server.url(), 1).await;
    let b = replica(&server.url(), 2).await;

    // A routes a request and holds its stream open: B sees the booking and the prediction.
    let held = a
        .router
        .clone()
        .generate(request("r1"))
        .await
        .expect("routed");
    let worker = a
        .router
        .selector()
        .load()
        .loads()
        .into_iter()
        .find(|(_, load)| load.active_requests == 1)
        .map(|(worker, _)| worker)
        .expect("a booked worker");
    until("B sees A's booking", || {
        b.state.load().load(worker).active_requests == 1
    })
    .await;
    let blocks = RouteRequest::new(&request("r1"), block_size()).blocks;
    until("B knows A's prediction", || {
        b.approx
            .overlaps(&blocks, Instant::now())
            .get(worker)
            .device
            == 4
    })
    .await;

    // A's stream ends: B releases the booking.
    drop(held);
    until("B sees A's release", || {
        b.state.load().load(worker).active_requests == 0
    })
    .await;

    // C joins while A has a request in flight: it catches up from A's snapshot.
    let held = a
        .router
        .clone()
        .generate(request("r2"))
        .await
        .expect("routed");
    until("B sees the second booking", || {
        b.state.load().load(worker).active_requests == 1
    })
    .await;
    let c = replica(&server.url(), 3).await;
    until("C catches up", || {
        c.state.load().load(worker).active_requests == 1
            && c.approx
                .overlaps(&blocks, Instant::now())
                .get(worker)
                .device
                == 4
    })
    .await;
    assert_eq!(c.state.remote_bookings(), [(ReplicaId(1), vec![1])]);
    drop(held);
    until("C sees the release", || {
        c.state.load().load(worker).active_requests == 0
    })
    .await;
    assert_eq!(c.state.dropped(), 0);
    assert_eq!(a.state.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_again_after_nats_restarts() {
    let mut server = LocalNats::start().expect("nats-server starts");
    let port = server.port();
    let a = replica(&server.url(), 1).await;
    let b = replica(&server.url(), 2).await;
    let first = a
        .router
        .clone()
        .generate(request("r1"))
        .await
        .expect("routed");
    let second = a
        .router
        .clone()
        .generate(request("r2"))
        .await
        .expect("routed");
    until("B sees both bookings", || {
        b.state.remote_bookings() == [(ReplicaId(1), a.state.own_bookings())]
    })
    .await;
    // While NATS is down, one request ends and another starts: whatever of it the clients'
    // buffers do not deliver after the restart, the digests repair.
    server.stop();
    drop(first);
    let third = a
        .router
        .clone()
        .generate(request("r3"))
        .await
        .expect("routed");
    let _restarted = LocalNats::start_on(port).expect("nats-server restarts");
    until("B converges on A's bookings", || {
        b.state.remote_bookings() == [(ReplicaId(1), a.state.own_bookings())]
            && a.state.own_bookings().len() == 2
    })
    .await;
    drop((second, third));
    until("B sees the releases", || {
        b.state.remote_bookings().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_another_pool_share_among_themselves_only() {
    let server = LocalNats::start().expect("nats-server starts");
    let nats = NatsEvents::connect(&server.url(), "test")
        .await
        .expect("connected");
    let decode = replica_on(nats.clone(), 1).await;
    let decode_peer = replica(&server.url(), 2).await;
    let prefill = replica_on(nats.within("prefill"), 3).await;
    let prefill_peer = replica_on(nats.within("prefill"), 4).await;

    let held = decode
        .router
        .clone()
        .generate(request("r1"))
        .await
        .expect("routed");
    until("the decode peer sees the booking", || {
        decode_peer.state.remote_bookings() == [(ReplicaId(1), vec![0])]
    })
    .await;
    let held_prefill = prefill
        .router
        .clone()
        .generate(request("p1"))
        .await
        .expect("routed");
    // One connection published the decode booking before the prefill one, and NATS keeps a
    // publisher's order: had the decode booking reached the prefill pool, the prefill peer
    // would hold it beside its own pool's, and this would never hold.
    until("the prefill peer sees its pool's booking alone", || {
        prefill_peer.state.remote_bookings() == [(ReplicaId(3), vec![0])]
    })
    .await;
    // The decode release, published after the prefill booking, reaches the decode peer: had
    // the prefill booking reached it, it would be there still.
    drop(held);
    until("the decode peer sees the release", || {
        !decode_peer
            .state
            .remote_bookings()
            .iter()
            .any(|(replica, _)| *replica == ReplicaId(1))
    })
    .await;
    assert_eq!(decode_peer.state.remote_bookings(), []);
    drop(held_prefill);
}
