//! `dynamo-serve planner`: a planner over a pool of `dynamo-serve worker` processes it starts
//! and stops on this machine.
//!
//! Each interval it gathers, from NATS, the workers' load reports (the typed `LoadReport` each
//! worker publishes every second) and the frontends' traffic reports (the `TrafficReport` each
//! frontend publishes every second: arrivals, prompt and output lengths, cache hits, time to
//! first token and between tokens), keeps the reports of the workers the directory registry
//! lists, and hands them to `dynamo_planner::run` as one `Observation`. The load policy (the
//! default) grows the pool when the queues deepen or the KV caches fill, and shrinks it after
//! calm intervals; the SLA policies (`--policy sla|dynamo_sla --profile FILE`) plan from the
//! traffic and what one worker achieves.
//! Workers are started and stopped (SIGTERM: they leave discovery, then drain) by
//! `LocalProcesses`. Ctrl-C or SIGTERM stops the planner and its workers gracefully.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use dynamo_core::layers::TrafficReport;
use dynamo_core::{WorkerId, WorkerRole};
use dynamo_planner::local::{LocalProcesses, Membership, RegistryDirectory, WorkerTemplate};
use dynamo_planner::perf::PerfProfile;
use dynamo_planner::policy::{PolicyKind, SlaTargets};
use dynamo_planner::predict::{Constant, Predictor};
use dynamo_planner::{Bounds, Observation, Planner, PlannerConfig, Replicas, Scaler, WorkerLoad};
use dynamo_transport::events::{EventPlane, LoadReport, Subscription};
use futures::{Stream, StreamExt};

use crate::options::Options;

const POOL: WorkerRole = WorkerRole::Aggregated;

/// The settings of `dynamo-serve planner` beyond the deployment's.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Seconds between planning steps.
    pub(crate) interval_s: f64,
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) advisory: bool,
    pub(crate) policy: PolicyKind,
    /// What one worker achieves, for the SLA policies.
    pub(crate) profile: Option<PathBuf>,
    pub(crate) targets: SlaTargets,
    pub(crate) first_id: u64,
    /// The flags of every worker started, before the deployment's own.
    pub(crate) worker_flags: Vec<OsString>,
}

pub(crate) async fn run(
    options: &Options,
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let (Some(registry), Some(nats_url)) = (&options.registry, &options.nats) else {
        return Err("the planner needs --registry DIR and --nats URL".into());
    };
    let nats = crate::connect_nats(options, nats_url).await?;
    crate::log_nats_connection("planner", &nats);
    let profile = match &settings.profile {
        Some(path) => Some(
            PerfProfile::from_json_file(path)
                .map_err(|error| format!("--profile {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let policy = settings.policy.build(profile, settings.targets)?;
    let reports = nats.subscribe::<LoadReport>().await?;
    let traffic = nats.subscribe::<TrafficReport>().await?;
    let workers = WorkerTemplate::new(std::env::current_exe()?)
        .arg("worker")
        .args(&settings.worker_flags)
        .arg("--registry")
        .arg(registry)
        .args(["--nats", nats_url, "--namespace", &options.namespace])
        .args(nats_access_flags(&options.nats_access));
    let scaler = LocalProcesses::new(RegistryDirectory::new(registry))
        .with_pool(POOL, workers)
        .with_first_id(settings.first_id);
    let config = PlannerConfig {
        interval_s: settings.interval_s,
        bounds: Bounds {
            min_per_pool: settings.min_workers,
            max_per_pool: settings.max_workers,
            budget: settings.max_workers,
        },
        advisory: settings.advisory,
    };
    let constant = || Box::new(Constant::default()) as Box<dyn Predictor>;
    let mut planner = Planner::new(config, policy, constant)?;
    scaler.scale(POOL, settings.min_workers).await?;
    println!(
        "dynamo planner ({}): {} to {} workers registered in {}, load from NATS {}, a step every {} s{}",
        settings.policy,
        settings.min_workers,
        settings.max_workers,
        registry.display(),
        dynamo_transport::events::url_without_credentials(nats_url),
        settings.interval_s,
        if settings.advisory { " (advisory)" } else { "" }
    );
    let interval = Duration::from_secs_f64(settings.interval_s);
    let observations = observations(reports, traffic, RegistryDirectory::new(registry), interval);
    let shape = Replicas::Aggregated(settings.min_workers);
    tokio::select! {
        _ = dynamo_planner::run(&mut planner, observations, &scaler, shape) => {}
        () = crate::shutdown_signal() => tracing::info!("stopping the planner and its workers"),
    }
    let grace = Duration::from_secs(options.drain_timeout.saturating_add(5));
    scaler.shutdown(grace).await;
    Ok(())
}

/// One observation per `interval`: the traffic the frontends reported in it, and the last load
/// report of each worker `registry` lists.
fn observations(
    reports: Subscription<LoadReport>,
    traffic: Subscription<TrafficReport>,
    registry: RegistryDirectory,
    interval: Duration,
) -> impl Stream<Item = Observation> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seen = Seen {
        reports,
        traffic,
        registry,
        ticks,
        latest: HashMap::new(),
        summed: TrafficReport::default(),
        first: true,
    };
    futures::stream::unfold(seen, move |mut seen| async move {
        if std::mem::take(&mut seen.first) {
            // An interval's first tick is at once.
            seen.ticks.tick().await;
        }
        loop {
            tokio::select! {
                _ = seen.ticks.tick() => break,
                report = seen.reports.next() => match report {
                    Some(Ok(report)) => { seen.latest.insert(report.worker, report); }
                    Some(Err(error)) => tracing::debug!(%error, "unreadable load report"),
                    None => return None,
                },
                report = seen.traffic.next() => match report {
                    Some(Ok(report)) => seen.summed.merge(&report),
                    Some(Err(error)) => tracing::debug!(%error, "unreadable traffic report"),
                    None => return None,
                },
            }
        }
        let listed = match seen.registry.members(POOL).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the registry");
                Vec::new()
            }
        };
        seen.latest
            .retain(|worker: &WorkerId, _| listed.contains(worker));
        let observed = Observation {
            interval_s: interval.as_secs_f64(),
            workers: seen.latest.values().map(load).collect(),
            ..Observation::default()
        }
        .with_traffic(&std::mem::take(&mut seen.summed));
        Some((observed, seen))
    })
}

/// What [`observations`] has seen of the current interval.
struct Seen {
    reports: Subscription<LoadReport>,
    traffic: Subscription<TrafficReport>,
    registry: RegistryDirectory,
    ticks: tokio::time::Interval,
    /// Each worker's last load report.
    latest: HashMap<WorkerId, LoadReport>,
    /// The interval's traffic reports, summed.
    summed: TrafficReport,
    first: bool,
}

/// A worker's report as the planner reads it.
fn load(report: &LoadReport) -> WorkerLoad {
    let kv_usage = if report.kv_blocks_total == 0 {
        0.0
    } else {
        report.kv_blocks_in_use as f64 / report.kv_blocks_total as f64
    };
    WorkerLoad {
        role: POOL,
        waiting: report.waiting_requests,
        running: report.active_requests,
        kv_usage: kv_usage.clamp(0.0, 1.0),
    }
}

/// The flags that give a worker the planner's NATS credentials file and TLS files.
fn nats_access_flags(access: &dynamo_transport::events::NatsAccess) -> Vec<std::ffi::OsString> {
    let mut flags = Vec::new();
    let mut flag = |name: &str, path: &std::path::Path| {
        flags.push(name.into());
        flags.push(path.as_os_str().to_owned());
    };
    if let Some(file) = &access.credentials_file {
        flag("--nats-creds", file);
    }
    if let Some(authority) = &access.root_certificate {
        flag("--nats-tls-ca", authority);
    }
    if let Some((certificate, key)) = &access.client_certificate {
        flag("--nats-tls-cert", certificate);
        flag("--nats-tls-key", key);
    }
    flags
}
