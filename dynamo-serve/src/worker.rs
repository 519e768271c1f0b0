//! `dynamo-serve worker`: one engine on the TCP request plane, registered for discovery,
//! publishing its KV events and load to NATS.
//!
//! SIGTERM (or Ctrl-C) drains it: the worker leaves discovery first, so the frontend routes
//! nothing new to it, answers the requests that still reach it `unavailable` (the frontend's
//! migration sends them elsewhere), finishes its open streams for up to `--drain-timeout`
//! seconds, and exits. A prefill worker also keeps serving the KV blocks it handed over until
//! the decode workers have pulled them (or their lease has run out), within the same deadline.
//! With `--exit-with-parent` it does the same when the process that started it exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynamo_core::{BoxEngine, EngineExt, TokenStream, WorkerId};
use dynamo_kvbm::KvExports;
use dynamo_transport::discovery::{DirectoryRegistration, EtcdRegistration, WorkerRecord};
use dynamo_transport::events::{EventPlane, LoadReport, NatsEvents};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engines::{self, LoadProbe};
use crate::options::Options;
use crate::{deploy, disagg};

/// How often the worker reports its load.
const LOAD_PERIOD: Duration = Duration::from_secs(1);

/// How long a worker's load report counts, in the frontend's routers and in the planner: three
/// report periods, so that a report or two lost on the way do not drop the worker's load, while
/// a worker that stopped reporting (hung, or cut off from NATS) is not counted at its last
/// queue for ever.
pub(crate) const REPORT_FRESH_FOR: Duration = LOAD_PERIOD.saturating_mul(3);

/// How often a `--exit-with-parent` worker checks that the process that started it lives.
const PARENT_CHECK: Duration = Duration::from_millis(500);

/// How the worker is registered; dropping it deregisters (a directory record at once, an etcd
/// lease or a Kubernetes Lease when its TTL runs out).
enum Registration {
    /// Boxed: an etcd client is large, the other variants small.
    Etcd(Box<EtcdRegistration>),
    Directory(DirectoryRegistration),
    Kubernetes(Box<crate::kubernetes::Registration>),
    Unregistered,
}

pub(crate) async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let model_file = engines::model_file(options.model.as_deref()).await?;
    let id = WorkerId::new(
        options
            .id
            .unwrap_or_else(|| u64::from(rand::random::<u32>())),
    );
    if options.host.is_unspecified() {
        return Err(format!(
            "--host {} cannot be registered: give the address the frontend should connect to",
            options.host
        )
        .into());
    }
    let nats = match &options.nats {
        Some(url) => {
            let nats = crate::connect_nats(&options, url).await?;
            crate::log_nats_connection("worker", &nats);
            Some(nats)
        }
        None => None,
    };
    let weights = engines::shared_weights(&options, &model_file)?;
    // The same assembly as the single process (`deploy`), over TCP and NATS.
    let shutdown = CancellationToken::new();
    let transport = crate::tls::request_plane(options.plane_tls.as_ref())?
        .bind(SocketAddr::new(options.host, options.port.unwrap_or(0)))
        .shutdown(shutdown.clone());
    let active = Arc::new(AtomicU64::new(0));
    let counting = Arc::clone(&active);
    let layout = disagg::layout_of(&options, weights.as_ref())?;
    let part = disagg::worker_part(&options, layout.as_ref()).await?;
    let exports = part
        .export
        .as_ref()
        .map(|export| Arc::clone(&export.exports));
    let worker = deploy::start_worker(
        &options,
        weights.as_ref(),
        id,
        part,
        &transport,
        nats.clone(),
        |e| counted(e, counting),
    )
    .await?;
    let mut serving = tokio::spawn(worker.served.serving);
    if let Some(nats) = nats {
        tokio::spawn(report_load(nats, id, worker.load, Arc::clone(&active)));
    }
    let record = worker.record;
    // Catch SIGTERM from before the worker is listed: a scaler may stop it as soon as it is.
    let signal = crate::shutdown_signal();
    let registration = if let Some(url) = &options.etcd {
        let ttl = Duration::from_secs(options.lease_ttl);
        let registration = EtcdRegistration::register_with(
            url,
            &options.namespace,
            &record,
            ttl,
            &options.etcd_access,
        )
        .await?;
        Registration::Etcd(Box::new(registration))
    } else if let Some(directory) = &options.registry {
        Registration::Directory(DirectoryRegistration::register(directory, &record)?)
    } else if options.kubernetes_discovery {
        let ttl = Duration::from_secs(options.lease_ttl);
        let registration = crate::kubernetes::register(&options, &record, ttl).await?;
        Registration::Kubernetes(Box::new(registration))
    } else {
        Registration::Unregistered
    };
    print_welcome(&options, &record);

    let signalled = tokio::select! {
        () = signal => true,
        () = parent_exit(options.exit_with_parent) => true,
        served = &mut serving => {
            served??;
            false
        }
    };
    // Deregister first: the frontend stops routing here while the open streams finish.
    match registration {
        Registration::Etcd(registration) => (*registration).deregister().await?,
        Registration::Directory(registration) => drop(registration),
        Registration::Kubernetes(registration) => {
            crate::kubernetes::deregister(*registration).await?
        }
        Registration::Unregistered => {}
    }
    if signalled {
        let deadline = Duration::from_secs(options.drain_timeout);
        drain(serving, &shutdown, &active, exports.as_deref(), deadline).await?;
    }
    Ok(())
}

/// Resolves once the process that started this one has exited (this process is then
/// reparented); never when `watch` is false. Polled, since Linux tells a child of its parent's
/// death only through a signal tied to the thread that forked it.
async fn parent_exit(watch: bool) {
    if !watch {
        return std::future::pending().await;
    }
    let parent = rustix::process::getppid();
    let mut ticks = tokio::time::interval(PARENT_CHECK);
    loop {
        ticks.tick().await;
        if rustix::process::getppid() != parent {
            tracing::warn!("the process that started this worker exited; draining");
            return;
        }
    }
}

/// Stop taking requests and wait until the open streams have ended and then, on a prefill
/// worker (which has `exports`), until every hand-over has been released or has expired, or
/// until `deadline` has passed (what is left is then cut when the process exits).
async fn drain(
    serving: tokio::task::JoinHandle<Result<(), dynamo_core::Error>>,
    shutdown: &CancellationToken,
    active: &AtomicU64,
    exports: Option<&KvExports>,
    deadline: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(
        "deregistered; draining {} streams{} (up to {} s)",
        active.load(Ordering::Relaxed),
        held(exports),
        deadline.as_secs()
    );
    shutdown.cancel();
    let finished = async {
        serving.await??;
        if let Some(exports) = exports.filter(|exports| exports.transfers() > 0) {
            tracing::info!(
                "streams ended; serving {} hand-overs until the decode workers pull them",
                exports.transfers()
            );
            exports.settled().await;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    match tokio::time::timeout(deadline, finished).await {
        Ok(finished) => {
            finished?;
            tracing::info!("drained");
        }
        Err(_) => tracing::warn!(
            "drain deadline passed with {} streams{}",
            active.load(Ordering::Relaxed),
            held(exports)
        ),
    }
    Ok(())
}

/// `" and N hand-overs"` on a prefill worker, nothing on the others.
fn held(exports: Option<&KvExports>) -> String {
    exports.map_or_else(String::new, |exports| {
        format!(" and {} hand-overs", exports.transfers())
    })
}

/// `engine`, counting its open streams in `active`.
fn counted(engine: BoxEngine, active: Arc<AtomicU64>) -> BoxEngine {
    tower::ServiceBuilder::new()
        .map_future(move |generation| {
            let active = Arc::clone(&active);
            async move {
                let stream: TokenStream = generation.await?;
                let guard = ActiveGuard::new(active);
                // The guard lives as long as the stream; the inner stream still cancels its
                // work when dropped.
                let stream = stream.map(move |chunk| {
                    let _counted = &guard;
                    chunk
                });
                Ok::<_, dynamo_core::Error>(TokenStream::new(stream, CancellationToken::new()))
            }
        })
        .service(engine)
        .boxed_engine()
}

/// One open stream, counted while it lives.
struct ActiveGuard(Arc<AtomicU64>);

impl ActiveGuard {
    fn new(active: Arc<AtomicU64>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Publish the worker's load every [`LOAD_PERIOD`].
async fn report_load(nats: NatsEvents, worker: WorkerId, probe: LoadProbe, active: Arc<AtomicU64>) {
    let mut ticks = tokio::time::interval(LOAD_PERIOD);
    loop {
        ticks.tick().await;
        let reading = probe.read();
        let report = LoadReport {
            worker,
            active_requests: active.load(Ordering::Relaxed),
            waiting_requests: reading.waiting_requests,
            kv_blocks_in_use: reading.kv_blocks_in_use,
            kv_blocks_total: reading.kv_blocks_total,
            preemptions: reading.preemptions,
        };
        // A report NATS cannot take is superseded by the next one.
        let _ = nats.publish(&report).await;
    }
}

fn print_welcome(options: &Options, record: &WorkerRecord) {
    let registered = match (&options.etcd, &options.registry) {
        (Some(url), _) => format!(
            "registered in etcd {} under {}/workers/ (lease TTL {} s)",
            dynamo_transport::events::url_without_credentials(url),
            options.namespace,
            options.lease_ttl
        ),
        (_, Some(directory)) => format!("registered in {}", directory.display()),
        _ if options.kubernetes_discovery => format!(
            "registered as a Kubernetes Lease dynamo/deployment={} (TTL {} s)",
            options.namespace, options.lease_ttl
        ),
        _ => format!(
            "not registered: start the frontend with --worker-at {}",
            record.address
        ),
    };
    let events = match &options.nats {
        Some(url) => format!("KV events and load to NATS {url}"),
        None => "no NATS: no KV events or load reports".to_owned(),
    };
    println!(
        "dynamo worker {} ({}) serving `{}` ({} engine) on {}; {registered}; {events}",
        record.id,
        record.role,
        record.model,
        options.engine.describe(),
        record.address
    );
}
