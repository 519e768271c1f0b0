//! Our SLA policy: capacity with headroom for the uncached load, and a quick reaction to
//! what the last interval showed.

mod config;
mod model;
mod pressure;
mod recent;
mod surge;
mod trend;
mod variability;

use dynamo_core::WorkerRole;

use super::pool::{resize, slot, whole};
use super::{Forecast, Policy, PoolRule, Proposal, Rule};
use crate::observe::Observation;
use crate::perf::{Correction, PerfProfile};
use crate::plan::Replicas;
pub use config::SlaConfig;
use pressure::Pressure;
use recent::Recent;
use surge::Surge;
use variability::Variability;

/// Our SLA planner, built to beat [`DynamoSla`](super::DynamoSla) on SLA attainment per
/// worker-hour on bursty and multi-turn traffic.
///
/// Each interval:
///
/// 1. **Plan for the peak, not the mean**: the arrival rate planned for is the larger of the
///    forecast and the last interval's rate.
/// 2. **Count only uncached prompt tokens**: the prefill load is `rate × ISL × (1 − hit
///    rate)`, with the KV hit rate smoothed over intervals; multi-turn conversations reuse
///    most of their prompt.
/// 3. **Keep the headroom the traffic needs**: each pool needs `load / (capacity per worker ×
///    u)` workers. Prefill capacity is the profile's at the uncached prompt length; decode
///    capacity, at context `ISL + OSL/2`, is the profile's best throughput among the batches
///    whose ITL times a smoothed ITL correction `c` (observed over profiled, at least 1) is
///    within the ITL target, divided by `c`: steps `c` times longer make `c` times fewer
///    tokens a second. An aggregated worker does both,
///    so its pool needs the sum of the two shares. The utilisation `u` is `utilisation`, or
///    less where the traffic has shown itself bursty: a queueing model (Kingman's, `latency /
///    unloaded − 1 = k × ρ / (1 − ρ)`) fitted to the intervals seen as a ratio of sums (each
///    interval's utilisation against its mean TTFT, and for an aggregated pool its mean ITL)
///    gives the utilisation at which the mean latency sits at `setpoint` of the share of the
///    room that makes a pool grow. Poisson-like traffic (`k` about 1) plans near
///    `utilisation`; traffic that arrives in bursts within an interval plans at well under it
///    (an aggregated pool on the Azure code trace at ×4: 33–40% utilisation most of the time).
/// 4. **React at once** when the interval missed a target or queued: a pool whose mean TTFT
///    (prefill, aggregated) or ITL (decode, aggregated) took more than its share (from
///    `attainment_goal`) of the room between what one unloaded worker shows and its limit
///    (the target, or `unloaded_margin` times the unloaded figure where that is more: more
///    workers cannot make a long prompt faster), whose queues would take more than
///    `queue_drain` of the TTFT target to prefill (prefill, aggregated) or hold more than
///    `queue_per_worker` requests (decode), or whose KV usage passed `kv_high` grows now —
///    by the square root of the worst figure's ratio to its limit, at least one worker, at
///    most `max_growth` times, less the workers asked for earlier that have not joined yet
///    (when the observation lists the workers, those missing from it are still starting);
///    while the pressure lasts after a step and its queue fell since, the pool grows no
///    further than its plan: a falling queue is the last step's workers draining a backlog,
///    and the latencies measure that backlog rather than the arrivals.
/// 5. **Shrink slowly**: only when the interval was calm — each mean latency low enough
///    that one worker fewer would keep it within its share of the room, with its excess
///    over the unloaded figure grown as a queue's wait, `ρ / (1 − ρ)`, at the interval's
///    load (within half the share where the load is unknown); queues within half of their
///    limit —, the largest plan (or reactive target) of the last `hold_s` seconds fits in
///    one worker fewer (at `shrink_below` of their capacity where the learned burstiness,
///    not `utilisation`, set the plan's share: such a pool runs at the latencies that make
///    it grow, and keeps part of a worker spare), and the policy has seen at least `hold_s`
///    seconds; after `calm_s` seconds of such intervals in a row, one worker, then one more
///    per `shrink_step_s` seconds while that lasts. Load that comes back within the window
///    (bursts a few minutes apart) finds the workers still there. A pool whose load has
///    missed no plan of the window by a worker or more (up or down) and whose plans fall
///    along a trend (a least-squares slope below zero at 95% confidence, `follow_falling`)
///    keeps room only for the window's largest rise above the plan, and its calm keeps
///    counting meanwhile: a smooth fall (a periodic load's falling half) is followed down
///    without the window's lag, while a steady load's scatter, which recurs, keeps the
///    window's largest plan. A miss below the plan while the window's plans already fell
///    along a trend (the fall quickening) carries the trend on and is not counted; a miss
///    below the plan that begins a fall (a burst's end) is. With `follow_predictable` any
///    such predictable load is followed.
/// 6. **A decode pool needs no more than the prefill pool hands over**: in a disaggregated
///    deployment its plan is capped by what the prefill pool (its size after this step)
///    hands over at its profiled capacity, and when the decode workers that take that much at
///    their full capacity are fewer, a calm decode pool shrinks to them at once, without the
///    window or the calm time: no arrivals can fill the workers it removes.
///
/// With `surge_window_s` set, the rate planned for also gets the `surge_quantile` of how far
/// the arrival rate rose above the plan in that window (off by default).
#[derive(Debug, Clone)]
pub struct SlaPolicy {
    config: SlaConfig,
    profile: PerfProfile,
    hit_rate: Option<f64>,
    itl_correction: Correction,
    /// Seconds each pool has been calm (by [`slot`]).
    calm: [f64; 3],
    /// The pool's queue when it last grew under pressure, while the pressure lasts.
    grew_at_queue: [Option<u64>; 3],
    /// Recent surges of the arrival rate above the plan.
    surge: Surge,
    /// Seconds since the first interval.
    clock_s: f64,
    /// How far the arrival rate rose above the rate planned for, over the last `hold_s`:
    /// the load the pool must keep room for when it shrinks.
    missed: Surge,
    /// Each pool's plans (fractional workers, headroom included) and reactive targets of the
    /// last `hold_s`.
    plans: [Recent; 3],
    /// Each pool's plans alone over the same window: whether they fall along a trend.
    planned: [Recent; 3],
    /// When each pool last saw the load miss its plan by a worker or more, up or down, other
    /// than below the plan while its plans already fell along a trend.
    surprised_at: [Option<f64>; 3],
    /// The learned burstiness of each prefilling pool's TTFT (by [`slot`]).
    ttft_variability: [Variability; 3],
    /// The learned burstiness of an aggregated pool's ITL.
    itl_variability: Variability,
    /// Whether each pool ended the last interval with a backlog (by [`slot`]).
    backlog: [bool; 3],
}

/// One pool's plan for the next interval, in fractional workers with headroom included.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// For the rate planned for.
    exact: f64,
    /// For that rate plus the largest rise above the plan of the last `hold_s`.
    kept: f64,
    /// Whether the interval that ended missed its plan by a worker or more, up or down.
    surprised: bool,
    /// Whether that interval's load was below its plan.
    fell: bool,
    /// For a decode pool, the most it can need whatever the arrivals: what the prefill pool
    /// hands over when all its workers prefill at their profiled capacity.
    ceiling: Option<f64>,
    /// The share of its capacity the plan uses: the `utilisation` cap, or less where the
    /// traffic's learned burstiness set it (a pool at such a plan runs at the mean latencies
    /// that make it grow).
    utilisation: f64,
}

impl SlaPolicy {
    /// The policy for `profile`'s workers with these settings; settings out of range take
    /// their defaults.
    pub fn new(profile: PerfProfile, config: SlaConfig) -> Self {
        let config = config.sanitized();
        SlaPolicy {
            config,
            profile,
            hit_rate: None,
            itl_correction: Correction::new(config.smoothing),
            calm: [0.0; 3],
            grew_at_queue: [None; 3],
            surge: Surge::new(config.surge_window_s, config.surge_quantile),
            clock_s: 0.0,
            missed: Surge::new(config.hold_s, 1.0),
            plans: std::array::from_fn(|_| Recent::new(config.hold_s)),
            planned: std::array::from_fn(|_| Recent::new(config.hold_s)),
            surprised_at: [None; 3],
            ttft_variability: [Variability::new(config.variability_memory_s); 3],
            itl_variability: Variability::new(config.variability_memory_s),
            backlog: [false; 3],
        }
    }

    /// Its settings.
    pub fn config(&self) -> &SlaConfig {
        &self.config
    }

    /// The smoothed KV hit rate (0 before any request was seen).
    pub fn hit_rate(&self) -> f64 {
        self.hit_rate.unwrap_or(0.0)
    }

    /// The ITL correction it plans with (never below 1).
    pub fn itl_correction(&self) -> f64 {
        self.itl_correction.factor().max(1.0)
    }

    /// One pool's size after an interval of `interval_s`, from its [`Plan`], the pressure,
    /// and how long it has been calm.
    fn size(
        &mut self,
        role: WorkerRole,
        current: usize,
        plan: Plan,
        pressure: &Pressure,
        interval_s: f64,
    ) -> (usize, Rule, String) {
        let exact = plan.exact;
        let planned = whole(exact);
        let (calm_s, step_s) = (self.config.calm_s, self.config.shrink_step_s);
        let pool = slot(role);
        // A miss below the plan that carries on a fall the window's plans already showed
        // (a periodic load's falling half, falling faster) is the trend going on, not a
        // surprise; a fall that begins with the miss (a burst's end) is one.
        let continues_fall = plan.fell && trend::falls(self.planned[pool].iter());
        self.plans[pool].push(self.clock_s, exact);
        self.planned[pool].push(self.clock_s, exact);
        if plan.surprised && !continues_fall {
            self.surprised_at[pool] = Some(self.clock_s);
        }
        // The load has been predictable when no interval of the last `hold_s` missed its plan
        // by a worker or more, up or down (a fall quickening excepted). A predictable load that falls along a trend (with
        // `follow_falling`), or any predictable load (with `follow_predictable`), keeps room
        // for the largest rise of the window above today's plan. Otherwise the pool keeps the
        // largest plan of the window.
        let unsurprised =
            self.surprised_at[pool].is_none_or(|at| self.clock_s - at >= self.config.hold_s);
        let predictable = unsurprised
            && (self.config.follow_predictable
                || (self.config.follow_falling && trend::falls(self.planned[pool].iter())));
        let mut held = if predictable {
            plan.kept.max(exact)
        } else {
            self.plans[pool].quantile(1.0).unwrap_or(exact).max(exact)
        };
        if let Some(ceiling) = plan.ceiling {
            held = held.min(ceiling.max(exact));
        }
        if let Some(step) = pressure.step(current, self.config.max_growth) {
            self.calm[pool] = 0.0;
            let queue = pressure.queue();
            if let Some(before) = self.grew_at_queue[pool]
                && queue < before
            {
                // The workers of the last step are draining the backlog that the latencies
                // still show: give them time. The latencies measure that backlog, not the
                // arrivals, so the pool grows no further than the plan for the arrivals.
                self.grew_at_queue[pool] = Some(queue);
                let target = planned.max(current);
                let action = if target > current {
                    format!("grow to the plan, {target}")
                } else {
                    format!("keep {current}")
                };
                let why = format!(
                    "{}, but the queue fell from {before} to {queue} requests since the pool \
                     last grew: {action}",
                    pressure.describe()
                );
                return (target, Rule::Draining, why);
            }
            let target = planned.max(current + step);
            // The hold window keeps what the pressure asked for, as it keeps what was planned.
            self.plans[pool].push(self.clock_s, target as f64);
            let action = if target > current {
                self.grew_at_queue[pool] = Some(queue);
                format!("grow to {target} now")
            } else {
                format!("keep {current} until they join")
            };
            return (
                target,
                Rule::Pressure,
                format!("{}: {action}", pressure.describe()),
            );
        }
        self.grew_at_queue[pool] = None;
        let calm = &mut self.calm[pool];
        if planned >= current {
            *calm = 0.0;
            return (planned, Rule::Plan, format!("the plan wants {planned}"));
        }
        if !pressure.is_calm() {
            *calm = 0.0;
            let why = format!(
                "the plan wants {planned}, but {}: keep {current}",
                pressure.describe_unsettled()
            );
            return (current, Rule::Unsettled, why);
        }
        if let Some(ceiling) = plan.ceiling {
            // Whatever comes, the pool never decodes more than the prefill pool hands over:
            // it shrinks at once, without waiting for the window or the calm, to the workers
            // that decode that at their full capacity.
            let full = ceiling * plan.utilisation;
            let most = whole(full).max(planned);
            if most < current {
                *calm = 0.0;
                let why = format!(
                    "the plan wants {planned}, and what the prefill pool hands over at its \
                     capacity needs {full:.2} at full capacity: shrink to {most}"
                );
                return (most, Rule::Ceiling, why);
            }
        }
        if self.clock_s < self.config.hold_s {
            *calm += interval_s.max(0.0);
            let why = format!(
                "the plan wants {planned}, but {:.0} s of {:.0} seen are too few to know the \
                 load will stay low: keep {current}",
                self.clock_s, self.config.hold_s
            );
            return (current, Rule::Warmup, why);
        }
        // A pool planned at the cap runs below the latencies that make it grow, so it may
        // shrink once the window's largest plan fits in one worker fewer. One planned at
        // what its burstiness allows runs at them: it keeps part of a worker spare, so that a
        // load that wavers around a whole number of workers does not make it waver too.
        let share = if plan.utilisation < self.config.utilisation {
            self.config.shrink_below
        } else {
            1.0
        };
        let fits = (current - 1) as f64 * share;
        if held > fits {
            // A predictable load's calm still counts while the room kept holds the pool: it
            // shrinks as soon as that room fits fewer workers. After a surprise the calm
            // starts only when the window's largest plan fits.
            *calm = if predictable {
                *calm + interval_s.max(0.0)
            } else {
                0.0
            };
            let kept = if predictable {
                "room for the load's largest rise above the plan"
            } else {
                "the most planned since the load missed its plan by a worker or more"
            };
            let why = format!(
                "the plan wants {planned}, but {held:.2} ({kept}, in the last {:.0} s) is above \
                 {fits:.2}, {:.0}% of one worker fewer: keep {current}",
                self.config.hold_s,
                share * 100.0
            );
            let rule = if predictable {
                Rule::RiseRoom
            } else {
                Rule::Window
            };
            return (current, rule, why);
        }
        *calm += interval_s.max(0.0);
        if *calm >= calm_s {
            let target = current - 1;
            let why = format!(
                "calm for {:.0} s and the plan wants {planned}: shrink by one to {target}",
                *calm
            );
            // The next step needs `shrink_step_s` more of calm.
            *calm = (calm_s - step_s).max(0.0);
            (target, Rule::Shrink, why)
        } else {
            let why = format!(
                "the plan wants {planned}; calm for {:.0} of {calm_s:.0} s before shrinking",
                *calm
            );
            (current, Rule::Calming, why)
        }
    }
}

impl Policy for SlaPolicy {
    fn name(&self) -> &'static str {
        "sla"
    }

    fn plan(&mut self, observed: &Observation, forecast: &Forecast, current: Replicas) -> Proposal {
        self.learn(observed, current);
        self.learn_variability(observed, current);
        let last_rate = observed.requests_per_s();
        if observed.interval_s.is_finite() && observed.interval_s > 0.0 {
            self.clock_s += observed.interval_s;
        }
        self.surge.observe(self.clock_s, last_rate);
        self.missed.observe(self.clock_s, last_rate);
        let base = forecast.requests_per_s.max(last_rate);
        self.surge.planned(base);
        let surge = self.surge.margin();
        let rate = base + surge;
        self.missed.planned(rate);
        let rise = self.missed.margin();
        let or_observed = |f: f64, o: f64| if f > 0.0 { f } else { o.max(0.0) };
        let isl = or_observed(forecast.input_tokens, observed.mean_input_tokens);
        let osl = or_observed(forecast.output_tokens, observed.mean_output_tokens);
        let need = self.need(rate, isl, osl);
        let risen = self.need(rate + rise, isl, osl);
        let surprise = self.need(self.missed.last(), isl, osl);
        // What the interval that ended asked of the workers, for how its latencies would grow
        // with one worker fewer.
        let shown = (observed.requests > 0).then(|| {
            self.need(
                last_rate,
                observed.mean_input_tokens,
                observed.mean_output_tokens,
            )
        });
        let limits = self.limits(observed, isl);
        let (mut parts, mut rules) = (Vec::new(), Vec::new());
        // The prefill pool's size once this step is played out (it is sized first), counting
        // the workers it removes, which prefill what they hold before they go.
        let mut prefilling = None;
        let target = resize(current, |role, n| {
            let u = self.utilisation(role, &limits);
            let share = |n: &model::Need| n.of(role) / u;
            let (planned, kept) = (share(&need), share(&risen));
            let load = match role {
                WorkerRole::Aggregated => "prefill and decode",
                WorkerRole::Prefill => "prefill",
                WorkerRole::Decode => "decode",
            };
            // A decode pool decodes what the prefill pool hands over: at most what its workers
            // prefill at full capacity, `need.prefill` of them for the planned rate.
            let ceiling = match (role, prefilling) {
                (WorkerRole::Decode, Some(p)) if need.prefill > 0.0 => {
                    Some(planned * p as f64 / need.prefill)
                }
                _ => None,
            };
            let plan = Plan {
                exact: planned,
                kept,
                surprised: share(&surprise) >= 1.0,
                fell: self.missed.fell(),
                ceiling,
                utilisation: u,
            };
            let busy = shown.as_ref().map(|asked| asked.of(role));
            let pressure = Pressure::of(role, n, observed, &limits, busy);
            let (size, rule, why) = self.size(role, n, plan, &pressure, observed.interval_s);
            rules.push(PoolRule::new(role, rule));
            if role == WorkerRole::Prefill {
                prefilling = Some(size.max(n));
            }
            parts.push(format!(
                "{} pool of {n}: {load} need {planned:.2} workers at {:.0}% utilisation; {why}",
                role.as_str(),
                u * 100.0
            ));
            size
        });
        let reason = format!(
            "planning for {rate:.2} req/s (forecast {:.2}, last {last_rate:.2}, recent surge \
             {surge:.2}, largest recent rise above the plan {rise:.2}) of {isl:.0} input tokens \
             ({:.0}% cached) and {osl:.0} output tokens, ITL correction {:.2}; {}",
            forecast.requests_per_s,
            self.hit_rate() * 100.0,
            self.itl_correction(),
            parts.join("; ")
        );
        Proposal {
            target,
            reason,
            rules,
        }
    }

    /// Grows a pool whose own figures — its queues and KV usage — pass their limits, as
    /// [`plan`](Policy::plan) would, and otherwise keeps it: the arrivals, lengths and
    /// latencies were not all heard, so the policy learns nothing from the interval, does
    /// not plan from it, and counts it as no calm time (no pool shrinks after it). The limits
    /// are those of the forecast's prompts.
    fn plan_unheard(
        &mut self,
        observed: &Observation,
        forecast: &Forecast,
        current: Replicas,
    ) -> Proposal {
        if observed.interval_s.is_finite() && observed.interval_s > 0.0 {
            self.clock_s += observed.interval_s;
        }
        let workers_only = Observation {
            interval_s: observed.interval_s,
            mean_input_tokens: forecast.input_tokens,
            mean_output_tokens: forecast.output_tokens,
            kv_hit_rate: self.hit_rate(),
            workers: observed.workers.clone(),
            ..Observation::default()
        };
        let limits = self.limits(&workers_only, forecast.input_tokens);
        let (mut parts, mut rules) = (Vec::new(), Vec::new());
        let target = resize(current, |role, n| {
            self.calm[slot(role)] = 0.0;
            let pressure = Pressure::of(role, n, &workers_only, &limits, None);
            let (size, rule, action) = match pressure.step(n, self.config.max_growth) {
                Some(step) if step > 0 => (
                    n + step,
                    Rule::Pressure,
                    format!("{}: grow to {}", pressure.describe(), n + step),
                ),
                Some(_) => (
                    n,
                    Rule::Pressure,
                    format!("{}: keep {n} until they join", pressure.describe()),
                ),
                None => (
                    n,
                    Rule::Unheard,
                    format!("queues and KV usage within their limits: keep {n}"),
                ),
            };
            parts.push(format!("{} pool of {n}: {action}", role.as_str()));
            rules.push(PoolRule::new(role, rule));
            size
        });
        let reason = format!(
            "the interval's traffic was not all heard: planning from the workers' queues and KV \
             usage alone; {}",
            parts.join("; ")
        );
        Proposal {
            target,
            reason,
            rules,
        }
    }
}

#[cfg(test)]
mod dynamics;
#[cfg(test)]
mod tests;
