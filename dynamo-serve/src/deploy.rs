//! The one way both deployments are assembled: workers serve their engines through a
//! `Transport` and publish their KV events on an `EventPlane`; the frontend's router follows a
//! `Discovery` of those workers through the same transport and applies the events to its index.
//!
//! | deployment | transport | event plane | discovery |
//! |---|---|---|---|
//! | one process (`dynamo-serve`) | `InProcess` | `LocalBus` | the workers it started (`StaticDiscovery`) |
//! | `worker` + `frontend` | `Tcp` | NATS | etcd, a directory, or `--worker-at` |

use std::sync::Arc;
use std::time::Duration;

use dynamo_candle::LlamaWeights;
use dynamo_core::layers::{DeadlineLayer, RetryConfig, RetryLayer};
use dynamo_core::{
    BlockSize, BoxEngine, EngineExt, Error, KvEvent, KvLayout, ResyncRequest, WorkerId, WorkerRole,
};
use dynamo_openai::WorkerGauges;
use dynamo_router::migrate::{MigrateLayer, MigrationConfig};
use dynamo_router::{
    ApproxConfig, ApproxIndex, HealthConfig, KvIndex, RoundRobin, RouterBuilder, RouterService,
    SharedIndex,
};
use dynamo_transport::discovery::{
    ConnectConfig, DirectoryDiscovery, Discovery, EtcdDiscovery, WorkerRecord, connect,
};
use dynamo_transport::events::{EventPlane, answer_resyncs, forward_resyncs, publish_all};
use dynamo_transport::{Served, Transport};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::disagg::{self, Part};
use crate::engines::{self, LoadProbe};
use crate::options::{Options, RouterKind};

/// KV events in flight from a worker's engine to its event plane; when it is full, the engine
/// drops events and the index notices the gap in event ids.
const EVENT_CAPACITY: usize = 4096;

/// Resync requests waiting to be published; when it is full a request is dropped, and the
/// worker's next gap asks again.
const RESYNC_CAPACITY: usize = 256;

/// The pause before each retry of a refused request (`--retries`).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How often the frontend sets `dynamo_router_indexed_blocks` from its index.
const INDEX_SIZES_EVERY: Duration = Duration::from_millis(250);

/// A worker whose engine is being served.
pub(crate) struct Worker {
    /// What discovery tells the frontend.
    pub(crate) record: WorkerRecord,
    /// Serves the engine until dropped: spawn it.
    pub(crate) served: Served,
    /// Where its engine's queue and KV usage can be read.
    pub(crate) load: LoadProbe,
}

/// Start worker `id`'s engine, in its `part` of disaggregated serving, with its KV events
/// published on `plane` when there is one, and serve it through `transport` (after `wrap`,
/// which the worker process uses to count streams).
pub(crate) async fn start_worker<T: Transport, P: EventPlane>(
    options: &Options,
    weights: Option<&LlamaWeights>,
    id: WorkerId,
    part: Part,
    transport: &T,
    plane: Option<P>,
    wrap: impl FnOnce(BoxEngine) -> BoxEngine,
) -> Result<Worker, Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    let events = plane.clone().map(|plane| {
        let (events, received) = mpsc::channel::<KvEvent>(EVENT_CAPACITY);
        tokio::spawn(publish_all(plane, received));
        events
    });
    let started = engines::start_engine(options, weights, block_size, id, events, &part)?;
    // A router that missed some of the worker's events asks it for a snapshot.
    if let (Some(plane), Some(publisher)) = (&plane, started.load.kv_publisher()) {
        tokio::spawn(answer_resyncs(plane, publisher).await?);
    }
    let served = transport.serve(wrap(started.engine)).await?;
    let record = WorkerRecord {
        id,
        address: served.address.clone(),
        model: options.name.clone(),
        block_size: block_size.get(),
        role: part.role,
        kv_layout: disagg::layout_of(options, weights)?,
    };
    Ok(Worker {
        record,
        served,
        load: started.load,
    })
}

/// The router of the kind `--router` names. When it routes on KV events, its index is `index`
/// when given (the index of the deployment's other pool, returned by the call that built that
/// router), else a new one fed from `plane` (subscribed before any worker starts, so no event
/// is missed), where a gap in a worker's event ids asks that worker for a snapshot over the
/// same plane; the index is returned. The two pools of a disaggregated deployment share one
/// index: every worker's events are applied once, and a worker is forgotten by the router of
/// its pool when it leaves (an index of one pool's own would keep the other pool's workers'
/// blocks for good, never routing to them, so never forgetting them).
///
/// Its workers are watched as [`HealthConfig`] says: an attempt with no token for
/// `--stall-timeout` seconds ends (and migrates), its worker leaves routing until it answers a
/// canary; the canaries run on a spawned task. A worker over a busy threshold
/// (`--active-*-threshold`) takes no new request; while every one is, a request waits in the
/// router's queue (`--router-queue-size`, `--router-queue-policy`) or, the queue full, is
/// refused as overloaded.
pub(crate) async fn start_router<P: EventPlane>(
    options: &Options,
    plane: Option<&P>,
    index: Option<SharedIndex>,
) -> Result<(RouterService, Option<SharedIndex>), Box<dyn std::error::Error>> {
    start_shared_router(options, plane, None, index).await
}

/// [`start_router`], and the router shares its state (its load bookings, and in approximate
/// mode its predictions) with the other frontends' routers of its pool on `share_on`'s plane,
/// the pool named in the log (see `dynamo_router::replicas`): what a frontend replica behind
/// a load balancer runs.
pub(crate) async fn start_shared_router<P: EventPlane>(
    options: &Options,
    plane: Option<&P>,
    share_on: Option<(&P, &'static str)>,
    index: Option<SharedIndex>,
) -> Result<(RouterService, Option<SharedIndex>), Box<dyn std::error::Error>> {
    let replica = crate::share::replica(options, share_on.map(|(_, pool)| pool));
    let block_size = BlockSize::new(options.block_size)?;
    let builder = crate::share::book_on(busy_router(options, options.health())?, replica.as_ref());
    let mut kv_index = None;
    let router = match (options.router, plane) {
        (RouterKind::Kv, Some(plane)) => {
            let index = match index {
                Some(index) => index,
                None => events_index(plane, block_size).await?,
            };
            kv_index = Some(index.clone());
            builder.kv_events(index).build()
        }
        (RouterKind::Kv, None) => {
            return Err("--router kv needs the workers' KV events (an event plane)".into());
        }
        (RouterKind::ApproxKv, _) => {
            let index = ApproxIndex::new(block_size, ApproxConfig::default());
            crate::share::approximate(builder, replica.as_ref(), index).build()
        }
        (RouterKind::RoundRobin, _) => builder.policy(RoundRobin::new()).build(),
    };
    if let (Some(replica), Some((plane, _))) = (replica, share_on) {
        crate::share::share(plane, replica, router.clone()).await?;
    }
    tokio::spawn(router.health_checks());
    Ok((router, kv_index))
}

/// A KV index fed from `plane`'s KV events, a gap in a worker's event ids asking that worker
/// for a snapshot over the same plane, its sizes kept in `dynamo_router_indexed_blocks`.
pub(crate) async fn events_index<P: EventPlane>(
    plane: &P,
    block_size: BlockSize,
) -> Result<SharedIndex, Box<dyn std::error::Error>> {
    let (resyncs, requested) = mpsc::channel::<ResyncRequest>(RESYNC_CAPACITY);
    tokio::spawn(forward_resyncs(plane.clone(), requested));
    let index = KvIndex::new(block_size).with_resync_hook(Arc::new(resyncs));
    let index = SharedIndex::from_index(index);
    let events = plane.subscribe::<KvEvent>().await?;
    // A message that does not parse, or a lag, is a gap in event ids the index sees.
    let events = events.filter_map(|event| std::future::ready(event.ok()));
    tokio::spawn(index.apply_all(events));
    tokio::spawn(report_index_sizes(index.clone()));
    Ok(index)
}

/// A router builder with `health`, the busy thresholds and the wait queue of
/// `--active-*-threshold` and `--router-queue-*` (none set: no worker is ever busy, as the
/// router's default), and the circuit breaker on each worker of `--breaker-*` (none by default).
pub(crate) fn busy_router(
    options: &Options,
    health: HealthConfig,
) -> Result<RouterBuilder, Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    let (order, size) = options.busy.queue();
    let builder = RouterService::builder(block_size)
        .health(health)
        .thresholds(options.busy_thresholds()?)
        .queue(order, size);
    Ok(match options.breaker {
        Some(breaker) => builder.circuit_breaker(breaker),
        None => builder,
    })
}

/// Every [`INDEX_SIZES_EVERY`], the gauge `dynamo_router_indexed_blocks{worker}`: the blocks the
/// index says each worker holds, to compare with the workers' own view (a snapshot) after
/// faults. A worker's series leaves `/metrics` once the index forgets it (the gauge is kept in
/// [`WorkerGauges`] for that), so workers that come and go under new ids leave no series behind.
pub(crate) async fn report_index_sizes(index: SharedIndex) {
    const INDEXED: &str = "dynamo_router_indexed_blocks";
    let gauges = WorkerGauges::global();
    let mut known: Vec<WorkerId> = Vec::new();
    let mut every = tokio::time::interval(INDEX_SIZES_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let sizes: Vec<(WorkerId, u64)> = index.read(|index| index.workers().collect());
        for forgotten in known
            .iter()
            .filter(|id| sizes.iter().all(|(w, _)| w != *id))
        {
            gauges.remove_series(INDEXED, &forgotten.to_string());
        }
        for (worker, blocks) in &sizes {
            gauges.set(INDEXED, &worker.to_string(), *blocks as f64);
        }
        known = sizes.into_iter().map(|(worker, _)| worker).collect();
    }
}

/// The registry `--etcd`, `--registry` or `--kubernetes-discovery` names, if one does, and
/// where it looks, for the start-up line (etcd's URL without credentials).
pub(crate) async fn registry(
    options: &Options,
) -> Result<Option<(Box<dyn Discovery>, String)>, Box<dyn std::error::Error>> {
    if options.kubernetes_discovery {
        return Ok(Some(crate::kubernetes::discovery(options).await?));
    }
    Ok(match (&options.etcd, &options.registry) {
        (Some(url), _) => Some((
            Box::new(EtcdDiscovery::new_with(
                url,
                &options.namespace,
                &options.etcd_access,
            )?),
            format!(
                "etcd {} ({}/workers/)",
                dynamo_transport::events::url_without_credentials(url),
                options.namespace
            ),
        )),
        (_, Some(directory)) => Some((
            Box::new(DirectoryDiscovery::new(directory)),
            directory.display().to_string(),
        )),
        _ => None,
    })
}

/// Which of the workers discovery reports a router takes.
pub(crate) enum Pool {
    /// Every one (aggregated serving).
    All,
    /// Prefill workers whose KV blocks pair with the layout, when there is one.
    Prefill(Option<KvLayout>),
    /// Decode and aggregated workers; a decode worker's blocks must pair with the layout.
    Decode(Option<KvLayout>),
}

/// Keep `router`'s workers equal to those of `pool` that `discovery` reports, reached through
/// `transport`.
pub(crate) fn follow<T: Transport>(
    options: &Options,
    router: &RouterService,
    transport: T,
    discovery: &dyn Discovery,
    pool: Pool,
) -> Result<(), Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    let config = ConnectConfig::new(block_size).model(options.name.clone());
    let (config, layout) = match pool {
        Pool::All => (config, None),
        Pool::Prefill(layout) => (config.roles([WorkerRole::Prefill]), layout),
        Pool::Decode(layout) => (
            config.roles([WorkerRole::Decode, WorkerRole::Aggregated]),
            layout,
        ),
    };
    let config = match layout {
        Some(layout) => config.kv_layout(layout),
        None => config,
    };
    tokio::spawn(router.discover(connect(discovery, transport, config)));
    Ok(())
}

/// `engine` (a router) behind request migration, retries, a deadline and tower's load
/// shedding: a request whose worker fails mid-stream continues on another (`--migration-limit`
/// times at most), one a worker refused before its first token is sent again (`--retries`
/// times at most, within the retry budget), a request still running after `--request-timeout` ends with
/// a timeout and its work is cancelled (retries share its time), and when the router has no
/// capacity (every worker busy and its wait queue full), a request is answered at once (503
/// with `Retry-After`) instead of waiting.
pub(crate) fn shed_load<E>(options: &Options, engine: E) -> BoxEngine
where
    E: dynamo_core::Engine + Clone + Send + Sync + 'static,
    E::Future: Send + 'static,
{
    let migration = MigrationConfig {
        limit: options.migration_limit,
        ..MigrationConfig::default()
    };
    let mut deadline = DeadlineLayer::new();
    if options.request_timeout > 0 {
        deadline = deadline.default_timeout(Duration::from_secs(options.request_timeout));
    }
    let retries = (options.retries > 0).then(|| {
        let config = RetryConfig::default()
            .max_attempts(options.retries.saturating_add(1))
            .backoff(RETRY_BACKOFF);
        RetryLayer::new(config)
    });
    tower::ServiceBuilder::new()
        .map_err(Error::from_boxed)
        .load_shed()
        .layer(deadline)
        .option_layer(retries)
        .layer(MigrateLayer::new(migration))
        .service(engine)
        .boxed_engine()
}
