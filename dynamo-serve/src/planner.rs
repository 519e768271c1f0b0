//! `dynamo-serve planner`: the load-based planner over a pool of `dynamo-serve worker`
//! processes it starts and stops on this machine.
//!
//! Each interval it gathers the workers' load reports from NATS (the typed `LoadReport` the
//! workers publish every second), keeps those of the workers the directory registry lists,
//! and hands them to `dynamo_planner::run` as one `Observation`; the load policy grows the
//! pool when the queues deepen or the KV caches fill, and shrinks it after calm intervals.
//! Workers are started and stopped (SIGTERM: they leave discovery, then drain) by
//! `LocalProcesses`. Ctrl-C or SIGTERM stops the planner and its workers gracefully.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::Duration;

use dynamo_core::{WorkerId, WorkerRole};
use dynamo_planner::local::{LocalProcesses, Membership, RegistryDirectory, WorkerTemplate};
use dynamo_planner::policy::{LoadConfig, LoadPolicy};
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
    let reports = nats.subscribe::<LoadReport>().await?;
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
    let mut planner = Planner::new(config, LoadPolicy::new(LoadConfig::default()), constant)?;
    scaler.scale(POOL, settings.min_workers).await?;
    println!(
        "dynamo planner: {} to {} workers registered in {}, load from NATS {}, a step every {} s{}",
        settings.min_workers,
        settings.max_workers,
        registry.display(),
        dynamo_transport::events::url_without_credentials(nats_url),
        settings.interval_s,
        if settings.advisory { " (advisory)" } else { "" }
    );
    let interval = Duration::from_secs_f64(settings.interval_s);
    let observations = observations(reports, RegistryDirectory::new(registry), interval);
    let shape = Replicas::Aggregated(settings.min_workers);
    tokio::select! {
        _ = dynamo_planner::run(&mut planner, observations, &scaler, shape) => {}
        () = crate::shutdown_signal() => tracing::info!("stopping the planner and its workers"),
    }
    let grace = Duration::from_secs(options.drain_timeout.saturating_add(5));
    scaler.shutdown(grace).await;
    Ok(())
}

/// One observation per `interval`: the last load report of each worker `registry` lists.
fn observations(
    reports: Subscription<LoadReport>,
    registry: RegistryDirectory,
    interval: Duration,
) -> impl Stream<Item = Observation> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (reports, registry, ticks, HashMap::new(), true);
    futures::stream::unfold(
        state,
        move |(mut reports, registry, mut ticks, mut latest, first)| async move {
            if first {
                // An interval's first tick is at once.
                ticks.tick().await;
            }
            loop {
                tokio::select! {
                    _ = ticks.tick() => break,
                    report = reports.next() => match report {
                        Some(Ok(report)) => { latest.insert(report.worker, report); }
                        Some(Err(error)) => tracing::debug!(%error, "unreadable load report"),
                        None => return None,
                    },
                }
            }
            let listed = match registry.members(POOL).await {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the registry");
                    Vec::new()
                }
            };
            latest.retain(|worker: &WorkerId, _| listed.contains(worker));
            let observed = Observation {
                interval_s: interval.as_secs_f64(),
                workers: latest.values().map(load).collect(),
                ..Observation::default()
            };
            Some((observed, (reports, registry, ticks, latest, false)))
        },
    )
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
