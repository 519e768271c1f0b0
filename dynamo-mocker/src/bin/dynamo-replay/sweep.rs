//! `--fixed-sweep`: fixed pools replayed beside the planner runs, and the frontier of SLA
//! attainment against GPU-hours that a planner's point is judged against (worker-hours where
//! each worker holds one GPU).

use std::fmt;

use dynamo_mocker::{DisaggConfig, Replay, ReplayConfig, Sla, Summary, TraceRequest};
use dynamo_planner::{Bounds, Replicas};

use crate::cli::{Cli, RouterName};

/// The size of one fixed pool of the sweep: aggregated ones ordered by size, disaggregated
/// ones by prefill workers, then decode workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PoolSize {
    /// One pool of this many workers.
    Aggregated(usize),
    /// A prefill pool and a decode pool.
    Disaggregated { prefill: usize, decode: usize },
}

impl PoolSize {
    /// The deployment as the planner counts it.
    pub(crate) fn replicas(self) -> Replicas {
        match self {
            PoolSize::Aggregated(workers) => Replicas::Aggregated(workers),
            PoolSize::Disaggregated { prefill, decode } => {
                Replicas::Disaggregated { prefill, decode }
            }
        }
    }
}

/// `4`, or `3+1` for 3 prefill and 1 decode workers.
impl fmt::Display for PoolSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolSize::Aggregated(workers) => write!(f, "{workers}"),
            PoolSize::Disaggregated { prefill, decode } => write!(f, "{prefill}+{decode}"),
        }
    }
}

/// The pools the sweep replays: the fixed deployments the planner's `bounds` allow, each pool
/// of `min_per_pool` to `max_per_pool` workers and all of them within the GPU `budget`.
/// Aggregated, by size; disaggregated, every prefill/decode split, by GPUs, then by prefill
/// workers.
pub(crate) fn sizes(bounds: &Bounds, disaggregated: bool) -> Vec<PoolSize> {
    let range = bounds.min_per_pool..=bounds.max_per_pool;
    let gpus = |size: &PoolSize| bounds.gpus.of_pools(size.replicas());
    let mut sizes: Vec<PoolSize> = if disaggregated {
        range
            .clone()
            .flat_map(|prefill| {
                range
                    .clone()
                    .map(move |decode| PoolSize::Disaggregated { prefill, decode })
            })
            .collect()
    } else {
        range.map(PoolSize::Aggregated).collect()
    };
    sizes.retain(|size| gpus(size) <= bounds.budget);
    sizes.sort_by_key(|size| (gpus(size), *size));
    sizes
}

/// One fixed pool's replay.
#[derive(Debug, Clone)]
pub(crate) struct FixedRun {
    pub(crate) size: PoolSize,
    /// The GPUs its workers hold.
    pub(crate) gpus: usize,
    pub(crate) summary: Summary,
    /// No other fixed pool reaches at least its attainment with no more GPU-hours (and
    /// beats it on one of the two).
    pub(crate) on_frontier: bool,
}

impl FixedRun {
    fn attainment(&self) -> f64 {
        self.summary.sla_attainment.unwrap_or(0.0)
    }

    fn hours(&self) -> f64 {
        gpu_hours(&self.summary)
    }

    /// The summary as a JSON line, with the pool's size (`workers`, or `prefill_workers` and
    /// `decode_workers`) and whether it is on the frontier.
    pub(crate) fn json_line(&self) -> Result<String, String> {
        let mut line = serde_json::to_value(&self.summary).map_err(|e| e.to_string())?;
        match self.size {
            PoolSize::Aggregated(workers) => line["workers"] = workers.into(),
            PoolSize::Disaggregated { prefill, decode } => {
                line["prefill_workers"] = prefill.into();
                line["decode_workers"] = decode.into();
            }
        }
        line["frontier"] = self.on_frontier.into();
        Ok(line.to_string())
    }
}

/// Replays each pool of [`sizes`] with the first router of `--router` (and, disaggregated,
/// the first placement of `--placement`), in the order of [`sizes`], and marks the frontier.
pub(crate) fn run(
    cli: &Cli,
    trace: &[TraceRequest],
    config: &ReplayConfig,
    sla: Sla,
) -> Result<Vec<FixedRun>, String> {
    let name = cli
        .routers
        .first()
        .copied()
        .unwrap_or(RouterName::RoundRobin);
    let placement = config.disagg.as_ref().and(cli.placements.first().copied());
    let bounds = crate::planning::checked_bounds(cli, config)?;
    let mut runs = Vec::new();
    for size in sizes(&bounds, placement.is_some()) {
        let (config, label) = match (size, &config.disagg, placement) {
            (PoolSize::Disaggregated { prefill, decode }, Some(disagg), Some(p)) => {
                let disagg = DisaggConfig {
                    prefill_workers: prefill,
                    decode_workers: decode,
                    ..*disagg
                };
                let config = ReplayConfig {
                    disagg: Some(disagg),
                    ..config.clone()
                };
                (config, format!("{name}/{p} fixed {size}"))
            }
            _ => {
                let config = ReplayConfig {
                    workers: size.replicas().total(),
                    disagg: None,
                    ..config.clone()
                };
                (config, format!("{name} fixed {size}"))
            }
        };
        let (policy, knowledge) = crate::router(name, &config, cli);
        let mut replay = Replay::new(trace, &config)
            .label(label.as_str())
            .policy(policy)
            .knowledge(knowledge)
            .sla(sla);
        if let Some(p) = placement {
            replay = crate::disaggregated(replay, p, &config, cli);
        }
        let outcome = replay
            .progress(crate::progress(&label, trace.len()))
            .run()
            .map_err(|e| e.to_string())?;
        runs.push(FixedRun {
            size,
            gpus: bounds.gpus.of_pools(size.replicas()),
            summary: outcome.summary,
            on_frontier: false,
        });
    }
    mark_frontier(&mut runs);
    Ok(runs)
}

/// Marks the runs that no other dominates: none has at least their attainment at no more
/// GPU-hours while beating them on one of the two.
fn mark_frontier(runs: &mut [FixedRun]) {
    let points: Vec<(f64, f64)> = runs.iter().map(|r| (r.attainment(), r.hours())).collect();
    for (run, &(attainment, hours)) in runs.iter_mut().zip(&points) {
        run.on_frontier = !points
            .iter()
            .any(|&(a, h)| a >= attainment && h <= hours && (a > attainment || h < hours));
    }
}

/// The fixed deployment sized for the peak, claim B's reference: among the pools with the
/// most GPUs, the one with the highest attainment (with fewer GPU-hours among equals).
/// Aggregated, that is the largest pool; disaggregated, the best split of the most GPUs.
pub(crate) fn peak(runs: &[FixedRun]) -> Option<&FixedRun> {
    let most = runs.iter().map(|r| r.gpus).max()?;
    runs.iter().filter(|r| r.gpus == most).reduce(|best, r| {
        let better = r.attainment() > best.attainment()
            || (r.attainment() == best.attainment() && r.hours() < best.hours());
        if better { r } else { best }
    })
}

/// The best fixed pool that uses no more GPU-hours than `hours`, claim A's reference: the
/// highest attainment among them (fewer GPU-hours among equals).
pub(crate) fn best_within(runs: &[FixedRun], hours: f64) -> Option<&FixedRun> {
    runs.iter()
        .filter(|r| r.hours() <= hours)
        .reduce(|best, r| {
            let better = r.attainment() > best.attainment()
                || (r.attainment() == best.attainment() && r.hours() < best.hours());
            if better { r } else { best }
        })
}

/// The pools a planner run had ready: `1-3`, or `2-3+1-2` (prefill, then decode).
fn ready_range(s: &Summary) -> String {
    let Some(points) = s.replicas.as_deref() else {
        return String::new();
    };
    let range = |values: Vec<usize>| {
        let low = values.iter().min().copied().unwrap_or(0);
        let high = values.iter().max().copied().unwrap_or(0);
        format!("{low}-{high}")
    };
    let decode = range(points.iter().map(|p| p.ready).collect());
    let prefill: Vec<usize> = points.iter().filter_map(|p| p.prefill_ready).collect();
    if prefill.is_empty() {
        decode
    } else {
        format!("{}+{decode}", range(prefill))
    }
}

/// A run's GPU-hours; infinite when it has none.
fn gpu_hours(s: &Summary) -> f64 {
    s.gpu_hours.unwrap_or(f64::INFINITY)
}

/// The fixed pools and the planner runs side by side (attainment against GPU-hours), the
/// frontier, and for each planner run the two claims: at least the attainment of the
/// best fixed pool that uses no more GPU-hours, and at least 0.9 of the attainment of the
/// pool sized for the peak at no more than 0.7 of its GPU-hours.
pub(crate) fn print_frontier(fixed: &[FixedRun], planned: &[Summary]) {
    let w = planned
        .iter()
        .map(|s| s.router.len())
        .chain(fixed.iter().map(|r| r.size.to_string().len() + 6))
        .max()
        .unwrap_or(0)
        .max(16);
    say!(
        "{:<w$} {:>8} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "run",
        "workers",
        "attainment",
        "worker_hours",
        "gpu_hours",
        "ttft_p90",
        "tpot_p90",
        "wall_ms",
        "frontier"
    );
    let row = |label: &str, workers: String, s: &Summary, frontier: &str| {
        say!(
            "{:<w$} {:>8} {:>10.4} {:>12.4} {:>9.4} {:>9.1} {:>9.2} {:>9.0} {:>8}",
            label,
            workers,
            s.sla_attainment.unwrap_or(0.0),
            s.worker_hours.unwrap_or(0.0),
            s.gpu_hours.unwrap_or(0.0),
            s.p90_ttft_ms,
            s.p90_tpot_ms,
            s.wall_time_ms,
            frontier
        );
    };
    for r in fixed {
        let frontier = if r.on_frontier { "*" } else { "" };
        row(
            &format!("fixed {}", r.size),
            r.size.to_string(),
            &r.summary,
            frontier,
        );
    }
    for s in planned {
        row(&s.router, ready_range(s), s, "");
    }
    let Some(peak) = peak(fixed) else {
        return;
    };
    let mut front: Vec<&FixedRun> = fixed.iter().filter(|r| r.on_frontier).collect();
    front.sort_by(|a, b| a.hours().total_cmp(&b.hours()));
    let names: Vec<String> = front.iter().map(|r| r.size.to_string()).collect();
    say!(
        "frontier (no other fixed pool reaches their attainment with no more GPU-hours): {}",
        names.join(", ")
    );
    let peak_name = match peak.size {
        PoolSize::Aggregated(workers) => format!("fixed {workers}"),
        PoolSize::Disaggregated { .. } => {
            format!("fixed {} (the best split of {} GPUs)", peak.size, peak.gpus)
        }
    };
    for s in planned {
        let hours = gpu_hours(s);
        let attainment = s.sla_attainment.unwrap_or(0.0);
        let (within, within_name) = best_within(fixed, hours)
            .map_or((0.0, "none".to_string()), |r| {
                (r.attainment(), format!("fixed {}", r.size))
            });
        let (ratio, hours_ratio) = (
            attainment / peak.attainment().max(f64::MIN_POSITIVE),
            hours / peak.hours(),
        );
        say!(
            "{}: attainment {attainment:.4} vs {within:.4} for the best fixed pool within its \
             GPU-hours, {within_name} ({}); {ratio:.2}x the attainment of {peak_name} at \
             {hours_ratio:.2}x its GPU-hours ({})",
            s.router,
            if attainment >= within {
                "met"
            } else {
                "missed"
            },
            if ratio >= 0.9 && hours_ratio <= 0.7 {
                "met"
            } else {
                "missed"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use dynamo_planner::WorkerGpus;

    use super::*;

    fn fixed(size: PoolSize, gpus: usize, attainment: f64, hours: f64) -> FixedRun {
        let summary = Summary {
            sla_attainment: Some(attainment),
            gpu_hours: Some(hours),
            ..Summary::of("", &[], 0.0, 0)
        };
        FixedRun {
            size,
            gpus,
            summary,
            on_frontier: false,
        }
    }

    fn split(prefill: usize, decode: usize) -> PoolSize {
        PoolSize::Disaggregated { prefill, decode }
    }

    /// Pools of `min` to `max` workers, one GPU each, `max` GPUs in all.
    fn bounds(min: usize, max: usize) -> Bounds {
        Bounds {
            min_per_pool: min,
            max_per_pool: max,
            budget: max,
            gpus: WorkerGpus::default(),
        }
    }

    #[test]
    fn a_disaggregated_sweep_covers_every_split_within_the_budget() {
        let all = sizes(&bounds(1, 4), true);
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["1+1", "1+2", "2+1", "1+3", "2+2", "3+1"]);
        assert_eq!(sizes(&bounds(1, 8), true).len(), 28);
        assert_eq!(
            sizes(&bounds(2, 5), true),
            [split(2, 2), split(2, 3), split(3, 2)]
        );
        assert!(sizes(&bounds(3, 5), true).is_empty());
        assert_eq!(
            sizes(&bounds(2, 4), false),
            [2, 3, 4].map(PoolSize::Aggregated).to_vec()
        );
    }

    #[test]
    fn the_sweep_counts_each_role_s_gpus_against_the_budget() {
        // Decode workers of 4 GPUs, 12 GPUs in all, at most 6 workers a pool.
        let tp4 = Bounds {
            budget: 12,
            gpus: WorkerGpus {
                decode: 4,
                ..WorkerGpus::default()
            },
            ..bounds(1, 6)
        };
        let names: Vec<String> = sizes(&tp4, true).iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "1+1", "2+1", "3+1", "4+1", "1+2", "5+1", "2+2", "6+1", "3+2", "4+2"
            ]
        );
        let aggregated = Bounds {
            budget: 7,
            gpus: WorkerGpus {
                aggregated: 2,
                ..WorkerGpus::default()
            },
            ..bounds(1, 6)
        };
        assert_eq!(
            sizes(&aggregated, false),
            [1, 2, 3].map(PoolSize::Aggregated).to_vec()
        );
    }

    #[test]
    fn the_frontier_keeps_the_undominated_pools_and_the_peak_is_the_best_largest_split() {
        let mut runs = vec![
            fixed(split(1, 1), 2, 0.2, 1.0),
            fixed(split(2, 1), 3, 0.6, 1.5),
            fixed(split(1, 2), 3, 0.3, 1.5), // dominated by 2+1
            fixed(split(2, 2), 4, 0.6, 2.0), // dominated by 2+1: same attainment, more hours
            fixed(split(3, 1), 4, 0.7, 2.0),
            fixed(split(1, 3), 4, 0.25, 2.0), // dominated
        ];
        mark_frontier(&mut runs);
        let front: Vec<String> = runs
            .iter()
            .filter(|r| r.on_frontier)
            .map(|r| r.size.to_string())
            .collect();
        assert_eq!(front, ["1+1", "2+1", "3+1"]);
        assert_eq!(peak(&runs).map(|r| r.size), Some(split(3, 1)));
        assert_eq!(best_within(&runs, 1.9).map(|r| r.size), Some(split(2, 1)));
        assert_eq!(best_within(&runs, 0.5).map(|r| r.size), None);
        // The peak is the best of the most GPUs, not of the most workers: with decode
        // workers of 2 GPUs, 1+2 and 3+1 hold 5 GPUs each and 1+2 reaches more; 2+1, better
        // still, holds fewer.
        let runs = [
            fixed(split(2, 1), 4, 0.9, 1.0),
            fixed(split(3, 1), 5, 0.5, 1.2),
            fixed(split(1, 2), 5, 0.8, 1.3),
        ];
        assert_eq!(peak(&runs).map(|r| r.size), Some(split(1, 2)));
    }
}
