//! `dynamo-serve planner`: a planner over a pool of `dynamo-serve worker` processes it starts
//! and stops on this machine (with `--disaggregated`, a prefill pool and a decode pool), or
//! over the pods of Kubernetes Deployments it scales ([`kubernetes`]).
//!
//! Each interval it gathers, from NATS, the workers' load reports (the typed `LoadReport` each
//! worker publishes every second) and the frontends' traffic reports (the `FrontendTraffic` each
//! frontend publishes every second: arrivals, prompt and output lengths, cache hits, time to first
//! token and between tokens), keeps the fresh reports (3 s) of the workers the deployment's
//! registry (`--etcd`, `--registry` or `--kubernetes-discovery`) lists, each in the pool of the
//! role it registered with, and hands them to `dynamo_planner::run` as one `Observation`. The load
//! policy (the default) grows a pool when its queues deepen or its KV caches fill, and shrinks it
//! after calm intervals; the SLA policies (`--policy sla|dynamo_sla --profile FILE`) plan from the
//! traffic and what one worker achieves. Every frontend reports each second, idle or not, under an
//! id of its own, so a step at which a frontend heard before has gone quiet (or none is heard)
//! while the workers hold requests has traffic unheard (a frontend cut off from NATS), not less of
//! it: the SLA policies plan that step from the workers' load alone (`sla` grows a pool whose
//! queues or KV usage pass their limits, and shrinks none; `dynamo_sla` holds the pools), where
//! they would read fewer arrivals and shrink. A frontend still quiet after three steps is taken as
//! gone ([`frontends`]). Workers are started and stopped (SIGTERM: they leave discovery, then
//! drain) by `LocalProcesses`, and counted ready once the registry lists them. Ctrl-C or SIGTERM
//! stops the planner and its workers gracefully (Kubernetes objects keep their replicas).

mod frontends;
pub(crate) mod kubernetes;
mod metrics;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use dynamo_core::layers::TrafficReport;
use dynamo_core::{WorkerId, WorkerRole};
use dynamo_planner::local::{LocalProcesses, RestartBackoff, WorkerTemplate};
use dynamo_planner::perf::PerfProfile;
use dynamo_planner::policy::{PolicyKind, SlaTargets};
use dynamo_planner::predict::PredictorKind;
use dynamo_planner::{
    Bounds, Observation, Planner, PlannerConfig, Replicas, Scaler, WorkerGpus, WorkerLoad,
};
use dynamo_transport::events::{EventPlane, FrontendTraffic, LoadReport, Subscription};
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::options::Options;
use crate::worker::REPORT_FRESH_FOR;
use dynamo_planner::local::Listed;
use frontends::{Frontends, Heard};

/// The settings of `dynamo-serve planner` beyond the deployment's.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Seconds between planning steps.
    pub(crate) interval_s: f64,
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    /// Most GPUs in all pools together, if fewer than `max_workers` of each pool hold.
    pub(crate) budget: Option<usize>,
    /// GPUs one worker of each role holds.
    pub(crate) gpus: WorkerGpus,
    pub(crate) predictor: PredictorKind,
    pub(crate) advisory: bool,
    pub(crate) policy: PolicyKind,
    /// What one worker achieves, for the SLA policies.
    pub(crate) profile: Option<PathBuf>,
    pub(crate) targets: SlaTargets,
    pub(crate) first_id: u64,
    /// Where to serve the planner's metrics, if anywhere.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// How long a pool waits to start workers again after one failed to start.
    pub(crate) restart_backoff: RestartBackoff,
    /// The flags of every worker started, before the deployment's own.
    pub(crate) worker_flags: Vec<OsString>,
    /// Plan a prefill pool and a decode pool (workers started with `--role prefill` and
    /// `--role decode`), each between `min_workers` and `max_workers`.
    pub(crate) disaggregated: bool,
    /// Scale these Kubernetes Deployments (or custom resources) rather than start worker
    /// processes.
    pub(crate) kubernetes: Option<kubernetes::Kubernetes>,
}

pub(crate) async fn run(
    options: &Options,
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let shape = settings.shape(settings.min_workers);
    let config = settings.planner_config();
    let Some(nats_url) = &options.nats else {
        return Err("the planner needs --nats URL".into());
    };
    let Some((registry, registry_name)) = crate::deploy::registry(options).await? else {
        return Err(
            "the planner needs --etcd URL, --registry DIR or --kubernetes-discovery".into(),
        );
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
    if let Some(address) = settings.metrics_addr {
        let address = metrics::serve(address).await?;
        println!("dynamo planner metrics on http://{address}/metrics");
    }
    let reports = nats.subscribe::<LoadReport>().await?;
    let traffic = nats.subscribe::<FrontendTraffic>().await?;
    let listed = Listed::follow(registry.as_ref());
    let predictor = settings.predictor;
    let mut planner = Planner::new(config, policy, move || predictor.build())?;
    let interval = Duration::from_secs_f64(settings.interval_s);
    let needs_traffic = settings.policy != PolicyKind::Load;
    let observations = observations(reports, traffic, listed.clone(), interval, needs_traffic);
    let announce = |scaled: &str| settings.announce(&registry_name, nats_url, scaled);
    if let Some(kubernetes) = &settings.kubernetes {
        return kubernetes::plan(kubernetes, settings, &mut planner, observations, announce).await;
    }
    let workers = WorkerTemplate::new(std::env::current_exe()?)
        .args(["worker", "--exit-with-parent"])
        .args(&settings.worker_flags)
        .args(registry_flags(options))
        .args(["--nats", nats_url, "--namespace", &options.namespace])
        .args(nats_access_flags(&options.nats_access));
    let mut scaler = LocalProcesses::new(listed)
        .with_first_id(settings.first_id)
        .with_restart_backoff(settings.restart_backoff);
    for (pool, role) in pools(shape) {
        let template = match role {
            Some(role) => workers.clone().args(["--role", role]),
            None => workers.clone(),
        };
        scaler = scaler.with_pool(pool, template);
    }
    for (pool, _) in pools(shape) {
        scaler.scale(pool, settings.min_workers).await?;
    }
    announce("as worker processes on this machine");
    drive(&mut planner, observations, &scaler, shape).await;
    let grace = Duration::from_secs(options.drain_timeout.saturating_add(5));
    scaler.shutdown(grace).await;
    Ok(())
}

/// Plans `shape`'s pools through `scaler`, one step per observation, until the observations
/// end or Ctrl-C or SIGTERM stops the planner.
async fn drive(
    planner: &mut Planner,
    observations: impl Stream<Item = Observation>,
    scaler: &dyn Scaler,
    shape: Replicas,
) {
    tokio::select! {
        _ = dynamo_planner::run(planner, observations, scaler, shape).count() => {}
        () = crate::shutdown_signal() => tracing::info!("stopping the planner"),
    }
}

impl Settings {
    /// Says on standard output what the planner plans, where its workers are (`scaled`), and
    /// what it observes them by.
    fn announce(&self, registry: &str, nats_url: &str, scaled: &str) {
        let pool_count = pools(self.shape(self.min_workers)).len();
        println!(
            "dynamo planner ({}, {} predictor): {} to {} {}{} {scaled}, registered in {}, load \
             from NATS {}, a step every {} s{}",
            self.policy,
            self.predictor,
            self.min_workers,
            self.max_workers,
            if pool_count == 1 {
                "workers"
            } else {
                "prefill and as many decode workers"
            },
            match self.budget {
                Some(budget) => format!(" ({budget} GPUs in all at most)"),
                None => String::new(),
            },
            registry,
            dynamo_transport::events::url_without_credentials(nats_url),
            self.interval_s,
            if self.advisory { " (advisory)" } else { "" }
        );
    }

    /// Why the budget cannot pay for the least pools (`--min-workers` in each, at their
    /// roles' GPUs), if it cannot. Bounds that contradict themselves otherwise (a minimum
    /// above the maximum) are left to the checks that name their flags.
    pub(crate) fn unaffordable(&self) -> Option<String> {
        let bounds = self.planner_config().bounds;
        bounds.check().ok()?;
        let error = bounds.check_for(self.shape(self.min_workers)).err()?;
        Some(format!("--budget: {error}"))
    }

    /// Why the Kubernetes Deployments cannot be planned as the flags name them (one for each
    /// pool, in a build with the `kube` feature), if they cannot.
    pub(crate) fn kubernetes_unusable(&self) -> Option<String> {
        let kubernetes = self.kubernetes.as_ref()?;
        if !cfg!(feature = "kube") {
            return Some(kubernetes::WITHOUT_KUBE.to_owned());
        }
        kubernetes.pools(self.shape(self.min_workers)).err()
    }

    /// The planner's interval, bounds and mode as the flags give them; the budget, unless
    /// given, pays for `max_workers` in each pool.
    fn planner_config(&self) -> PlannerConfig {
        PlannerConfig {
            interval_s: self.interval_s,
            bounds: Bounds {
                min_per_pool: self.min_workers,
                max_per_pool: self.max_workers,
                budget: self
                    .budget
                    .unwrap_or_else(|| self.gpus.of_pools(self.shape(self.max_workers))),
                gpus: self.gpus,
            },
            advisory: self.advisory,
        }
    }

    /// The pools the planner sizes, each of `workers` workers.
    fn shape(&self, workers: usize) -> Replicas {
        if self.disaggregated {
            Replicas::Disaggregated {
                prefill: workers,
                decode: workers,
            }
        } else {
            Replicas::Aggregated(workers)
        }
    }
}

/// The pools of `shape`, each with the `--role` its workers are started with (none for
/// aggregated workers).
fn pools(shape: Replicas) -> Vec<(WorkerRole, Option<&'static str>)> {
    match shape {
        Replicas::Aggregated(_) => vec![(WorkerRole::Aggregated, None)],
        Replicas::Disaggregated { .. } => vec![
            (WorkerRole::Prefill, Some("prefill")),
            (WorkerRole::Decode, Some("decode")),
        ],
    }
}

/// One observation per `interval`: the traffic the frontends reported in it, and the last load
/// report of each worker the registry lists, in the pool it registered in, if that report is
/// fresh ([`REPORT_FRESH_FOR`]): a listed worker whose reports stopped is left out of its
/// pool's load rather than counted at its last queue. With `needs_traffic` (a policy that
/// plans from the traffic), an interval at whose end a frontend heard before was quiet, or no
/// frontend was heard, while the workers held requests is marked
/// [`Observation::traffic_unheard`], with a warning: reading it as fewer arrivals would shrink
/// the pools under load, so the policy acts on the workers' load alone.
fn observations(
    reports: Subscription<LoadReport>,
    traffic: Subscription<FrontendTraffic>,
    listed: Listed,
    interval: Duration,
    needs_traffic: bool,
) -> impl Stream<Item = Observation> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seen = Seen {
        reports,
        traffic,
        listed,
        ticks,
        latest: HashMap::new(),
        summed: TrafficReport::default(),
        frontends: Frontends::default(),
        first: true,
    };
    futures::stream::unfold(seen, move |mut seen| async move {
        if std::mem::take(&mut seen.first) {
            // An interval's first tick is at once.
            seen.ticks.tick().await;
        }
        seen.interval().await?;
        let mut observed = seen.observation(interval);
        let heard = seen.frontends.step(Instant::now());
        let busy = observed.workers.iter().any(|w| w.running + w.waiting > 0);
        if needs_traffic && busy {
            match &heard {
                Heard::All => {}
                Heard::None => tracing::warn!(
                    "planner: no frontend reported traffic lately while the workers hold \
                     requests; planning from the workers' load alone (are the frontends on \
                     this NATS?)"
                ),
                Heard::Missing(frontends) => tracing::warn!(
                    ?frontends,
                    "planner: frontends heard before reported no traffic lately while the \
                     workers hold requests; planning from the workers' load alone (cut off \
                     from NATS?)"
                ),
            }
            observed.traffic_unheard = heard != Heard::All;
        }
        Some((observed, seen))
    })
}

/// What [`observations`] has seen of the current interval.
struct Seen {
    reports: Subscription<LoadReport>,
    traffic: Subscription<FrontendTraffic>,
    listed: Listed,
    ticks: tokio::time::Interval,
    /// Each worker's last load report, and when it arrived.
    latest: HashMap<WorkerId, (LoadReport, Instant)>,
    /// The interval's traffic reports, summed.
    summed: TrafficReport,
    /// The frontends heard, and when.
    frontends: Frontends,
    first: bool,
}

impl Seen {
    /// Gather the reports until the interval ends; none when a subscription ended.
    async fn interval(&mut self) -> Option<()> {
        loop {
            tokio::select! {
                _ = self.ticks.tick() => return Some(()),
                report = self.reports.next() => match report {
                    Some(Ok(report)) => { self.latest.insert(report.worker, (report, Instant::now())); }
                    Some(Err(error)) => tracing::debug!(%error, "unreadable load report"),
                    None => return None,
                },
                report = self.traffic.next() => match report {
                    Some(Ok(report)) => {
                        self.summed.merge(&report.traffic);
                        if report.last {
                            self.frontends.left(report.frontend);
                        } else {
                            self.frontends.heard(report.frontend, Instant::now());
                        }
                    }
                    Some(Err(error)) => tracing::debug!(%error, "unreadable traffic report"),
                    None => return None,
                },
            }
        }
    }

    /// The interval that ended: its summed traffic, and the fresh load of each listed worker.
    fn observation(&mut self, interval: Duration) -> Observation {
        let listed = &self.listed;
        let now = Instant::now();
        self.latest.retain(|&worker, (_, arrived)| {
            listed.role(worker).is_some() && now.duration_since(*arrived) <= REPORT_FRESH_FOR
        });
        let workers = self
            .latest
            .values()
            .filter_map(|(report, _)| Some(load(report, listed.role(report.worker)?)))
            .collect();
        Observation {
            interval_s: interval.as_secs_f64(),
            workers,
            ..Observation::default()
        }
        .with_traffic(&std::mem::take(&mut self.summed))
    }
}

/// A worker's report as the planner reads it, in the pool of `role`.
fn load(report: &LoadReport, role: WorkerRole) -> WorkerLoad {
    let kv_usage = if report.kv_blocks_total == 0 {
        0.0
    } else {
        report.kv_blocks_in_use as f64 / report.kv_blocks_total as f64
    };
    WorkerLoad {
        role,
        waiting: report.waiting_requests,
        running: report.active_requests,
        kv_usage: kv_usage.clamp(0.0, 1.0),
    }
}

/// The flags that register a started worker where the planner counts it: `--etcd` (with
/// etcd's TLS files), `--registry` or `--kubernetes-discovery` (with its namespace).
fn registry_flags(options: &Options) -> Vec<OsString> {
    let mut flags: Vec<OsString> = Vec::new();
    if let Some(url) = &options.etcd {
        flags.extend(["--etcd".into(), url.into()]);
        let access = &options.etcd_access;
        if let Some(authority) = &access.root_certificate {
            flags.extend(["--etcd-tls-ca".into(), authority.into()]);
        }
        if let Some((certificate, key)) = &access.client_certificate {
            flags.extend(["--etcd-tls-cert".into(), certificate.into()]);
            flags.extend(["--etcd-tls-key".into(), key.into()]);
        }
    } else if let Some(directory) = &options.registry {
        flags.extend(["--registry".into(), directory.into()]);
    } else if options.kubernetes_discovery {
        flags.push("--kubernetes-discovery".into());
        if let Some(namespace) = &options.kubernetes_namespace {
            flags.extend(["--kubernetes-namespace".into(), namespace.into()]);
        }
    }
    flags
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

#[cfg(test)]
mod tests {
    use dynamo_transport::events::LocalBus;

    use super::*;

    fn report(worker: u64, waiting: u64) -> LoadReport {
        LoadReport {
            worker: WorkerId::new(worker),
            active_requests: waiting,
            waiting_requests: waiting,
            kv_blocks_in_use: 0,
            kv_blocks_total: 0,
            preemptions: 0,
        }
    }

    /// `worker` reports `waiting` requests every second, `times` times from now.
    fn reports_every_second(bus: &LocalBus, worker: u64, waiting: u64, times: usize) {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            for _ in 0..times {
                every.tick().await;
                let _ = bus.publish(&report(worker, waiting)).await;
            }
        });
    }

    /// `frontend` reports `requests` arrivals of 100 prompt tokens every second, `times` times,
    /// from `after` on.
    fn traffic_every_second(
        bus: &LocalBus,
        frontend: u64,
        requests: u64,
        after: Duration,
        times: usize,
    ) {
        let bus = bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            for _ in 0..times {
                every.tick().await;
                let traffic = TrafficReport {
                    requests,
                    prompt_tokens: 100 * requests,
                    ..TrafficReport::default()
                };
                let report = FrontendTraffic {
                    frontend,
                    traffic,
                    last: false,
                };
                let _ = bus.publish(&report).await;
            }
        });
    }

    /// The observations of the workers `listed` from what `bus` carries, one every 10 s.
    async fn observed(
        bus: &LocalBus,
        listed: &Listed,
        needs_traffic: bool,
    ) -> Result<impl Stream<Item = Observation> + use<>, Box<dyn std::error::Error>> {
        let reports = bus.subscribe::<LoadReport>().await?;
        let traffic = bus.subscribe::<FrontendTraffic>().await?;
        let interval = Duration::from_secs(10);
        Ok(observations(
            reports,
            traffic,
            listed.clone(),
            interval,
            needs_traffic,
        ))
    }

    /// Two listed workers report every second; one stops after ten seconds (hung, or cut off
    /// from NATS) with 50 requests waiting. The first interval counts both; the second counts
    /// only the one that still reports, not the other's last queue.
    #[tokio::test(start_paused = true)]
    async fn a_worker_whose_reports_stop_leaves_its_pool_s_load()
    -> Result<(), Box<dyn std::error::Error>> {
        let bus = LocalBus::new();
        let listed = Listed::of([1, 2].map(|w| (WorkerId::new(w), WorkerRole::Aggregated)));
        let mut observed = std::pin::pin!(observed(&bus, &listed, false).await?);
        reports_every_second(&bus, 1, 0, usize::MAX);
        reports_every_second(&bus, 2, 50, 10);
        let waiting = |o: &Observation| o.workers.iter().map(|w| w.waiting).sum::<u64>();

        let first = observed.next().await.ok_or("the stream ended")?;
        assert_eq!((first.workers.len(), waiting(&first)), (2, 50));
        let second = observed.next().await.ok_or("the stream ended")?;
        assert_eq!((second.workers.len(), waiting(&second)), (1, 0));
        Ok(())
    }

    /// A busy worker reports every second; no frontend is heard for the first interval, then
    /// one reports 3 arrivals a second. A planner that plans from the traffic gets the unheard
    /// interval marked as such, not as an interval without arrivals; one that plans from the
    /// load alone gets it unmarked.
    #[tokio::test(start_paused = true)]
    async fn an_interval_with_busy_workers_and_no_frontend_heard_is_marked_unheard()
    -> Result<(), Box<dyn std::error::Error>> {
        let bus = LocalBus::new();
        let listed = Listed::of([(WorkerId::new(1), WorkerRole::Aggregated)]);
        let mut traffic_planner = std::pin::pin!(observed(&bus, &listed, true).await?);
        let mut load_planner = std::pin::pin!(observed(&bus, &listed, false).await?);
        reports_every_second(&bus, 1, 5, usize::MAX);
        traffic_every_second(&bus, 1, 3, Duration::from_millis(10_500), usize::MAX);
        let started = Instant::now();

        let (load, traffic) = tokio::join!(load_planner.next(), traffic_planner.next());
        let (load, traffic) = (
            load.ok_or("the stream ended")?,
            traffic.ok_or("the stream ended")?,
        );
        assert_eq!(
            (load.requests, load.workers.len(), load.traffic_unheard),
            (0, 1, false)
        );
        assert_eq!(
            (
                traffic.requests,
                traffic.workers.len(),
                traffic.traffic_unheard
            ),
            (0, 1, true)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // The second interval holds the frontend's ten reports.
        let heard = traffic_planner.next().await.ok_or("the stream ended")?;
        assert_eq!(
            (heard.requests, heard.traffic_unheard),
            (30, false),
            "{heard:?}"
        );
        Ok(())
    }

    /// Two frontends report 1 arrival a second each to a busy worker's planner, a step every
    /// 10 s; after ten seconds the second stops reporting, and says so in a last report if
    /// `says_so`. The first step reads both frontends' arrivals, the next ones the first
    /// frontend's alone; the time from the start to the first of those whose traffic is
    /// taken as whole.
    async fn next_step_after_a_frontend_stops(
        says_so: bool,
    ) -> Result<Duration, Box<dyn std::error::Error>> {
        let bus = LocalBus::new();
        let listed = Listed::of([(WorkerId::new(1), WorkerRole::Aggregated)]);
        let mut planner = std::pin::pin!(observed(&bus, &listed, true).await?);
        reports_every_second(&bus, 1, 5, usize::MAX);
        let half_a_second = Duration::from_millis(500);
        traffic_every_second(&bus, 1, 1, half_a_second, usize::MAX);
        traffic_every_second(&bus, 2, 1, half_a_second, 10);
        if says_so {
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10_200)).await;
                let traffic = TrafficReport::default();
                let last = FrontendTraffic {
                    frontend: 2,
                    traffic,
                    last: true,
                };
                let _ = bus.publish(&last).await;
            });
        }
        let started = Instant::now();

        let both = planner.next().await.ok_or("the stream ended")?;
        assert_eq!(both.requests, 20, "{both:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        loop {
            let one = planner.next().await.ok_or("the stream ended")?;
            assert_eq!(one.requests, 10, "{one:?}");
            if !one.traffic_unheard {
                return Ok(started.elapsed());
            }
        }
    }

    /// A frontend that goes quiet (cut off from NATS, or killed): the steps that read half
    /// the traffic, at 20, 30 and 40 s, are marked unheard; the one at 50 s takes it as gone
    /// and the other's traffic as whole.
    #[tokio::test(start_paused = true)]
    async fn steps_with_a_frontend_gone_quiet_are_unheard_until_it_is_taken_as_gone()
    -> Result<(), Box<dyn std::error::Error>> {
        let next = next_step_after_a_frontend_stops(false).await?;
        assert_eq!(next, Duration::from_secs(50));
        Ok(())
    }

    /// A frontend that says it stops (its last report): no step counts it as unheard.
    #[tokio::test(start_paused = true)]
    async fn a_frontend_that_says_it_stops_is_not_waited_for()
    -> Result<(), Box<dyn std::error::Error>> {
        let next = next_step_after_a_frontend_stops(true).await?;
        assert_eq!(next, Duration::from_secs(20));
        Ok(())
    }
}
