//! Several router replicas in front of one pool of workers.

/// Router replicas behind a load balancer, each with its own router, in an aggregated replay.
///
/// Arrivals are dealt to the replicas in turn (round-robin, in arrival order). Each replica
/// routes with its own [`WorkerSelector`](dynamo_router::WorkerSelector): its own load tracker
/// and, in approximate mode ([`CacheKnowledge::Approximate`](crate::CacheKnowledge)), its own
/// predictions; in event mode every replica reads the workers' KV events (one index stands for
/// all of them, since every replica receives the same events). With [`share`](Self::share),
/// the replicas share their state through `dynamo_router::replicas::ReplicaState`, the code a
/// deployment runs: each replica's bookings, first tokens, releases and predictions reach the
/// others [`delay_ms`](Self::delay_ms) later on the virtual clock. The replay loses no message.
///
/// ```
/// use dynamo_mocker::{CacheKnowledge, Replay, ReplayConfig, RouterReplicas, TraceRequest};
/// use dynamo_router::{ApproxConfig, KvCost, KvCostConfig};
///
/// // Four requests that share a prefix, a second apart.
/// let trace: Vec<TraceRequest> = (0..4)
///     .map(|i| TraceRequest {
///         timestamp: i as f64 * 1000.0,
///         input_length: 1024,
///         output_length: 4,
///         hash_ids: vec![1, 2],
///     })
///     .collect();
/// let config = ReplayConfig { workers: 4, ..ReplayConfig::default() };
/// let run = |share| {
///     Replay::new(&trace, &config)
///         // Seeded tie-breaks: four replicas that break their ties at random could, by
///         // chance, all pick the same idle worker.
///         .policy(KvCost::new(KvCostConfig { seed: Some(1), ..KvCostConfig::default() }))
///         .knowledge(CacheKnowledge::Approximate(ApproxConfig::default()))
///         .router_replicas(RouterReplicas { count: 4, share, delay_ms: 1.0 })
///         .run()
/// };
/// // Shared predictions send every request where the first one went.
/// let shared = run(true)?;
/// assert!(shared.records.iter().all(|r| r.worker == shared.records[0].worker));
/// // Each replica alone knows nothing of the others' placements.
/// let alone = run(false)?;
/// assert!(alone.records.iter().any(|r| r.worker != alone.records[0].worker));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterReplicas {
    /// How many replicas; at least 1. Default 1.
    pub count: usize,
    /// Whether they share their state. Default true.
    pub share: bool,
    /// How long a replica's message takes to reach the others, in ms. Default 0.
    pub delay_ms: f64,
}

impl Default for RouterReplicas {
    fn default() -> Self {
        RouterReplicas {
            count: 1,
            share: true,
            delay_ms: 0.0,
        }
    }
}
