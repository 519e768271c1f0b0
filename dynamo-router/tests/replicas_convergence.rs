//! Router replicas that share their bookings converge: messages dropped, duplicated, delayed
//! and reordered, then flowing again for a few digest intervals, leave every replica with the
//! same load view, equal to the bookings that are really active.

use std::time::{Duration, Instant};

use dynamo_core::{ReplicaId, ReplicaMessage, SequenceHash, WorkerId};
use dynamo_router::replicas::{ReplicaConfig, ReplicaState};
use dynamo_router::{Booking, LoadGuard, WorkerLoad};
use proptest::prelude::*;

const REPLICAS: usize = 3;
const WORKERS: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Replica `.0` books a request on worker `.1` with prompt blocks `.2` (a chain's length),
    /// forked into `.3` sequences.
    Book(usize, u64, u64, u32),
    /// Replica `.0`'s request `.1` (modulo its active ones) produces its first token.
    FirstToken(usize, usize),
    /// Replica `.0`'s request `.1` (modulo its active ones) ends.
    Release(usize, usize),
    /// Replica `.0` publishes a digest.
    Tick(usize),
    /// Messages move, badly: each copy is dropped, delivered, delivered twice, or held back
    /// (and a held-back one is delivered later, out of order).
    Deliver(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REPLICAS, 0..WORKERS, 0u64..4, 1u32..4)
            .prop_map(|(r, w, b, n)| Op::Book(r, w, b, n)),
        2 => (0..REPLICAS, 0usize..8).prop_map(|(r, i)| Op::FirstToken(r, i)),
        3 => (0..REPLICAS, 0usize..8).prop_map(|(r, i)| Op::Release(r, i)),
        1 => (0..REPLICAS).prop_map(Op::Tick),
        3 => prop::collection::vec(0u8..4, 1..16).prop_map(Op::Deliver),
    ]
}

struct Cluster {
    states: Vec<ReplicaState>,
    /// Each replica's bookings: the guard, its prefill tokens, whether it prefilled, its
    /// sequences.
    guards: Vec<Vec<(LoadGuard, u64, bool, u32)>>,
    /// Messages held back on their way to each replica.
    held: Vec<Vec<ReplicaMessage>>,
    now: Instant,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            states: (0..REPLICAS)
                .map(|i| ReplicaState::new(ReplicaConfig::new(ReplicaId(i as u64))))
                .collect(),
            guards: (0..REPLICAS).map(|_| Vec::new()).collect(),
            held: (0..REPLICAS).map(|_| Vec::new()).collect(),
            now: Instant::now(),
        }
    }

    /// Take every replica's outgoing messages.
    fn outgoing(&self) -> Vec<(usize, ReplicaMessage)> {
        let mut all = Vec::new();
        for (from, state) in self.states.iter().enumerate() {
            while let Some(message) = state.try_next_message() {
                all.push((from, message));
            }
        }
        all
    }

    fn chaos(&mut self, fates: &[u8]) {
        let mut fate = fates.iter().cycle();
        for (from, message) in self.outgoing() {
            for to in (0..REPLICAS).filter(|&to| to != from) {
                match fate.next().copied().unwrap_or(1) {
                    0 => {}
                    1 => self.states[to].apply(&message, self.now),
                    2 => {
                        self.states[to].apply(&message, self.now);
                        self.states[to].apply(&message, self.now);
                    }
                    _ => self.held[to].push(message.clone()),
                }
            }
        }
        // Some held-back messages arrive now, newest first.
        for to in 0..REPLICAS {
            if fate.next().is_some_and(|f| f % 2 == 0) {
                while let Some(message) = self.held[to].pop() {
                    self.states[to].apply(&message, self.now);
                }
            }
        }
    }

    /// Messages flow again, in order and without loss, for a few digest intervals.
    fn heal(&mut self) {
        for _ in 0..3 {
            self.now += Duration::from_secs(1);
            for state in &self.states {
                state.tick(self.now);
            }
            loop {
                let outgoing = self.outgoing();
                if outgoing.is_empty() {
                    break;
                }
                for (from, message) in outgoing {
                    for to in (0..REPLICAS).filter(|&to| to != from) {
                        self.states[to].apply(&message, self.now);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn load_views_converge_once_messages_flow(ops in prop::collection::vec(op(), 1..80)) {
        let mut cluster = Cluster::new();
        let mut next_block = 0u64;
        for op in ops {
            cluster.now += Duration::from_millis(10);
            match op {
                Op::Book(r, w, blocks, sequences) => {
                    let chain: Vec<SequenceHash> = (0..blocks)
                        .map(|i| SequenceHash(next_block * 16 + i))
                        .collect();
                    next_block += 1;
                    let prefill = 64 * (blocks + 1);
                    let booking = Booking {
                        blocks: chain,
                        prefill_tokens: prefill,
                        sequences,
                        ..Booking::default()
                    };
                    let guard = cluster.states[r].load().book(WorkerId::new(w), booking);
                    cluster.guards[r].push((guard, prefill, false, sequences));
                }
                Op::FirstToken(r, i) if !cluster.guards[r].is_empty() => {
                    let at = i % cluster.guards[r].len();
                    let (guard, _, prefilled, _) = &mut cluster.guards[r][at];
                    guard.first_token();
                    *prefilled = true;
                }
                Op::Release(r, i) if !cluster.guards[r].is_empty() => {
                    let at = i % cluster.guards[r].len();
                    drop(cluster.guards[r].swap_remove(at));
                }
                Op::Tick(r) => cluster.states[r].tick(cluster.now),
                Op::Deliver(fates) => cluster.chaos(&fates),
                Op::FirstToken(..) | Op::Release(..) => {}
            }
        }
        cluster.heal();
        // Every replica believes each other one holds exactly what it holds.
        for (i, state) in cluster.states.iter().enumerate() {
            let expected: Vec<(ReplicaId, Vec<u64>)> = cluster
                .states
                .iter()
                .enumerate()
                .filter(|&(j, other)| j != i && !other.own_bookings().is_empty())
                .map(|(_, other)| (other.id(), other.own_bookings()))
                .collect();
            prop_assert_eq!(state.remote_bookings(), expected);
        }
        // And every replica's load view is the same, and true.
        for w in 0..WORKERS {
            let worker = WorkerId::new(w);
            let active = cluster
                .guards
                .iter()
                .flatten()
                .filter(|(guard, ..)| guard.worker() == worker);
            let (requests, prefill) =
                active.fold((0, 0), |(n, p), (_, tokens, prefilled, sequences)| {
                    (n + sequences, p + if *prefilled { 0 } else { *tokens })
                });
            let views: Vec<WorkerLoad> = cluster.states.iter().map(|s| s.load().load(worker)).collect();
            for view in &views {
                prop_assert_eq!(view.active_requests, requests);
                prop_assert_eq!(view.active_prefill_tokens, prefill);
                prop_assert_eq!(view, &views[0]);
            }
        }
    }
}

#[test]
fn a_replica_that_joins_catches_up_from_a_snapshot() {
    let now = Instant::now();
    let a = ReplicaState::new(ReplicaConfig::new(ReplicaId(1)));
    let worker = WorkerId::new(4);
    let booking = Booking {
        blocks: vec![SequenceHash(1), SequenceHash(2)],
        prefill_tokens: 128,
        ..Booking::default()
    };
    let _guard = a.load().book(worker, booking);
    // Nobody heard the booking.
    while a.try_next_message().is_some() {}
    let b = ReplicaState::new(ReplicaConfig::new(ReplicaId(2)));
    b.join();
    let request = b.try_next_message().expect("a snapshot request");
    a.apply(&request, now);
    while let Some(message) = a.try_next_message() {
        b.apply(&message, now);
    }
    assert_eq!(b.load().load(worker), a.load().load(worker));
    assert_eq!(b.remote_bookings(), [(ReplicaId(1), vec![0])]);
}

#[test]
fn a_full_outbox_drops_and_counts_and_a_lost_release_expires() {
    let mut config = ReplicaConfig::new(ReplicaId(1));
    config.outbox_capacity = 2;
    let a = ReplicaState::new(config);
    let b = ReplicaState::new(ReplicaConfig::new(ReplicaId(2)));
    let worker = WorkerId::new(1);
    let guards: Vec<LoadGuard> = (0..3)
        .map(|_| a.load().book(worker, Booking::default()))
        .collect();
    assert_eq!(a.dropped(), 1);
    let now = Instant::now();
    while let Some(message) = a.try_next_message() {
        b.apply(&message, now);
    }
    assert_eq!(b.load().load(worker).active_requests, 2);
    // The releases are lost, and so is every digest: the bookings expire.
    drop(guards);
    while a.try_next_message().is_some() {}
    b.tick(now + b.config().booking_ttl);
    assert_eq!(b.load().load(worker).active_requests, 0);
}

#[tokio::test]
async fn a_request_waiting_on_another_replicas_load_goes_when_that_load_is_released() {
    use dynamo_core::{BlockSize, EchoEngine, EngineExt, GenerateRequest};
    use dynamo_router::{BusyThresholds, QueueOrder, RouterService};

    let a = ReplicaState::new(ReplicaConfig::new(ReplicaId(1)));
    let b = ReplicaState::new(ReplicaConfig::new(ReplicaId(2)));
    let worker = WorkerId::new(1);
    let router = RouterService::builder(BlockSize::new(4).expect("not zero"))
        .load_tracker(b.load())
        .thresholds(BusyThresholds {
            max_active_requests: Some(1),
            ..BusyThresholds::default()
        })
        .queue(QueueOrder::Fcfs, 8)
        .build();
    router.insert_worker(worker, EchoEngine::new());
    // A's request makes the only worker busy for B too.
    let held = a.load().book(worker, Booking::default());
    let now = Instant::now();
    while let Some(message) = a.try_next_message() {
        b.apply(&message, now);
    }
    let request = GenerateRequest::new("r1", "echo", vec![1, 2, 3]).with_max_tokens(1);
    let mut caller = router.clone();
    let waiting = tokio::spawn(async move { caller.generate_all(request).await });
    while router.queued() == 0 {
        tokio::task::yield_now().await;
    }
    drop(held);
    while let Some(message) = a.try_next_message() {
        b.apply(&message, now);
    }
    router.wake_waiting();
    let generation = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken")
        .expect("joined")
        .expect("served");
    assert_eq!(generation.tokens, [1]);
}
