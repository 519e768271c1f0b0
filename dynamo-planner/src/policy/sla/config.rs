//! The settings of the SLA policy.

use serde::{Deserialize, Serialize};

use crate::policy::SlaTargets;

/// The settings of [`SlaPolicy`](super::SlaPolicy). Every knob has a default that suits a 30–60 s interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlaConfig {
    /// The latency targets.
    pub targets: SlaTargets,
    /// The share of each worker's profiled capacity the plan may use, in `(0, 1]`: the rest is
    /// headroom for bursts within the interval. Default 0.8.
    pub utilisation: f64,
    /// A pool that computes prompts (prefill, aggregated) is short of workers now when the
    /// mean queue of its workers would take more than this share of the TTFT target to
    /// prefill, at the profile's throughput for the uncached part of a prompt (and when more
    /// than one request waits per worker, whatever the prompts). Default 1.
    pub queue_drain: f64,
    /// A decode pool is short of workers now when more requests than this wait per worker.
    /// Default 2.
    pub queue_per_worker: f64,
    /// Mean KV usage above which a decode (or aggregated) pool is short of workers now: past
    /// it, engines start to preempt. Default 0.9.
    pub kv_high: f64,
    /// A mean TTFT or ITL counts as a miss only when it also passes this multiple of what
    /// one unloaded worker shows (the profile's TTFT for the interval's uncached prompt, its
    /// ITL at batch size 1 for the interval's context): past the target for that reason alone,
    /// more workers would not help. Default 1.5.
    pub unloaded_margin: f64,
    /// The share of requests the pool should keep within the targets, in `(0.5, 1)`. The
    /// policy sees mean latencies, while the SLA is met request by request; if the time a
    /// request spends beyond what one unloaded worker needs (queueing, interference) is
    /// roughly exponential, a share `g` of requests stays within the target when that mean
    /// excess is at most `room / ln(1 / (1 − g))` (room: the target less the unloaded time).
    /// Past that mean a pool grows; it is calm, and may shrink, when one worker fewer would
    /// keep it below that mean, the excess growing as a queue's wait `ρ / (1 − ρ)` at the
    /// interval's load (below half of it where the load is unknown). Default 0.9 (grow past
    /// 43% of the room; five workers at 40% of their capacity are calm below 29% of it).
    pub attainment_goal: f64,
    /// Seconds a pool must stay calm, with a plan that wants fewer workers, before it
    /// shrinks by one worker. In seconds rather than intervals, so that a shorter planning
    /// interval does not make the planner quicker to shrink. Default 180.
    pub calm_s: f64,
    /// Seconds of further calm between one shrinking step and the next. Default 60.
    pub shrink_step_s: f64,
    /// A pool whose plan's share of capacity the learned burstiness set (below
    /// `utilisation`) shrinks only when its plan fits in one worker fewer at this share of
    /// them: at that plan it runs at the latencies that make it grow, and a load that wavers
    /// around a whole number of workers would make it waver too. A pool planned at
    /// `utilisation` runs below them and shrinks when its plan fits in one worker fewer.
    /// Default 0.85.
    pub shrink_below: f64,
    /// The most one reactive step multiplies a pool by (it always adds at least one
    /// worker). Default 4.
    pub max_growth: f64,
    /// Weight of the newest interval in the smoothed KV hit rate and ITL correction, in
    /// `(0, 1]`. Default 0.3.
    pub smoothing: f64,
    /// Seconds of past intervals whose surges above the planned rate (how far each
    /// interval's arrival rate rose above the rate planned for it) the plan keeps headroom
    /// for; 0 (the default) plans for the forecast alone. Off by default: it keeps capacity
    /// for bursts between them, which bought attainment on bursty traces but cost more
    /// worker-hours than the fixed pools that reach it (docs/planner-journal.md).
    pub surge_window_s: f64,
    /// The quantile of those surges the plan adds to the rate it plans for, in `(0, 1]`.
    /// Default 0.9.
    pub surge_quantile: f64,
    /// Seconds over which the learned burstiness of the traffic (how much latency grows with
    /// utilisation, against a Poisson queue) fades by a factor e; 0 plans at `utilisation`
    /// alone, without learning. Default 1800.
    pub variability_memory_s: f64,
    /// Where the plan aims each mean latency, as a share of the limit past which a pool
    /// grows (the rest of the room is headroom), in `(0, 1]`: the learned burstiness turns
    /// it into the utilisation the plan may use. Default 1: the mean that `attainment_goal`
    /// allows. (0.75, midway between the calm limit and the grow limit, met the same number
    /// of the figures' claims across nine workloads; docs/planner-journal.md.)
    pub setpoint: f64,
    /// A pool shrinks only when the largest of its plans of this many seconds past fits in
    /// one worker fewer, and never before the policy has seen this many seconds: load that
    /// comes back within the window finds the workers still there. Default 300, the
    /// scale-down stabilisation window of Kubernetes' horizontal pod autoscaler.
    pub hold_s: f64,
    /// Follow a predictable load down without the hold window's lag: while no interval of the
    /// last `hold_s` missed the rate planned for it by a worker or more (up or down), a pool
    /// keeps room only for the largest rise above the plan seen in the window, and its calm
    /// time keeps counting while that room holds it. Any miss of a worker or more brings back
    /// the whole window, except a miss below the plan while the window's plans already fall
    /// along a trend (the fall quickening). Off by default: on the Mooncake trace at ×1, whose steady load is
    /// predictable, it shrinks to three workers, which miss claim B of docs/planner.md;
    /// `follow_falling` (on) follows only a load that falls along a trend.
    pub follow_predictable: bool,
    /// Follow a predictable load down when it falls along a trend: while no interval of the
    /// last `hold_s` missed its plan by a worker or more and the window's plans fall along a
    /// line more steeply than their scatter explains (a least-squares slope below zero at 95%
    /// confidence), a pool keeps room only for the largest rise above the plan seen in the
    /// window, as with `follow_predictable`. A miss below the plan while the plans already
    /// fell along such a line carries the fall on and does not count; one that begins a fall
    /// (a burst's end) does. A steady load's scatter recurs within the window
    /// and keeps the window's largest plan. Default on: on the generated sine it spends 9%
    /// fewer worker-hours for 3% less attainment, and the steady Mooncake trace keeps its
    /// pool (docs/planner-journal.md).
    pub follow_falling: bool,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            targets: SlaTargets::default(),
            utilisation: 0.8,
            queue_drain: 1.0,
            queue_per_worker: 2.0,
            kv_high: 0.9,
            unloaded_margin: 1.5,
            attainment_goal: 0.9,
            calm_s: 180.0,
            shrink_step_s: 60.0,
            shrink_below: 0.85,
            max_growth: 4.0,
            smoothing: 0.3,
            surge_window_s: 0.0,
            surge_quantile: 0.9,
            variability_memory_s: 1800.0,
            hold_s: 300.0,
            setpoint: 1.0,
            follow_predictable: false,
            follow_falling: true,
        }
    }
}

impl SlaConfig {
    /// The same settings, each out of its range replaced by its default.
    pub(super) fn sanitized(self) -> Self {
        let d = SlaConfig::default();
        let within = |v: f64, lo: f64, hi: f64, default: f64| {
            if v > lo && v <= hi { v } else { default }
        };
        SlaConfig {
            utilisation: within(self.utilisation, 0.0, 1.0, d.utilisation),
            queue_drain: within(self.queue_drain, 0.0, f64::MAX, d.queue_drain),
            queue_per_worker: within(self.queue_per_worker, 0.0, f64::MAX, d.queue_per_worker),
            kv_high: within(self.kv_high, 0.0, 1.0, d.kv_high),
            unloaded_margin: within(self.unloaded_margin, 0.0, f64::MAX, d.unloaded_margin),
            attainment_goal: within(self.attainment_goal, 0.5, 0.999, d.attainment_goal),
            calm_s: within(self.calm_s, -1.0, f64::MAX, d.calm_s).max(0.0),
            shrink_step_s: within(self.shrink_step_s, -1.0, f64::MAX, d.shrink_step_s).max(0.0),
            shrink_below: within(self.shrink_below, 0.0, 1.0, d.shrink_below),
            max_growth: within(self.max_growth, 1.0, f64::MAX, d.max_growth),
            smoothing: within(self.smoothing, 0.0, 1.0, d.smoothing),
            surge_window_s: within(self.surge_window_s, -1.0, f64::MAX, d.surge_window_s).max(0.0),
            surge_quantile: within(self.surge_quantile, 0.0, 1.0, d.surge_quantile),
            setpoint: within(self.setpoint, 0.0, 1.0, d.setpoint),
            hold_s: within(self.hold_s, -1.0, f64::MAX, d.hold_s).max(0.0),
            variability_memory_s: within(
                self.variability_memory_s,
                -1.0,
                f64::MAX,
                d.variability_memory_s,
            )
            .max(0.0),
            ..self
        }
    }
}

impl SlaConfig {
    /// The share of the room between the unloaded latency and its limit a mean latency may
    /// take before a pool grows: `1 / ln(1 / (1 − attainment_goal))`, at most 1.
    pub fn grow_share(&self) -> f64 {
        (1.0 / (1.0 / (1.0 - self.attainment_goal)).ln()).min(1.0)
    }
}
