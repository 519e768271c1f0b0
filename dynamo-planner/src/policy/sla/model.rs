//! The SLA policy's model: what it learns from each interval, what the forecast needs, and
//! the limits the interval's figures are judged by.

use dynamo_core::WorkerRole;

use super::SlaPolicy;
use super::pressure::Limits;
use crate::observe::Observation;
use crate::plan::Replicas;
use crate::policy::pool::{PoolLoad, slot};

/// The least share of its capacity a plan uses, however bursty the traffic looks: below it
/// one interval's odd latency would ask for more workers than any load needs.
const LEAST_UTILISATION: f64 = 0.05;

/// Waiting requests per worker at the end of an interval past which the next one begins
/// with a backlog.
const BACKLOG: f64 = 1.0;

/// What the forecast needs, in fractional workers, before headroom.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need {
    /// Prefill workers.
    pub(super) prefill: f64,
    /// Decode workers.
    pub(super) decode: f64,
}

impl Need {
    /// The workers a pool of `role` needs: an aggregated worker does both.
    pub(super) fn of(&self, role: WorkerRole) -> f64 {
        match role {
            WorkerRole::Aggregated => self.prefill + self.decode,
            WorkerRole::Prefill => self.prefill,
            WorkerRole::Decode => self.decode,
        }
    }
}

impl SlaPolicy {
    /// Learn the hit rate and the ITL correction from the interval that ended.
    pub(super) fn learn(&mut self, observed: &Observation, current: Replicas) {
        if observed.requests == 0 {
            return;
        }
        let hit = observed.kv_hit_rate.clamp(0.0, 1.0);
        if hit.is_finite() {
            let s = self.config.smoothing;
            self.hit_rate = Some(self.hit_rate.map_or(hit, |old| s * hit + (1.0 - s) * old));
        }
        let Some(itl) = observed.mean_itl_ms else {
            return;
        };
        let (isl, osl) = (observed.mean_input_tokens, observed.mean_output_tokens);
        let (role, decoders) = match current {
            Replicas::Aggregated(n) => (WorkerRole::Aggregated, n),
            Replicas::Disaggregated { decode, .. } => (WorkerRole::Decode, decode),
        };
        let load = PoolLoad::of(observed, role);
        let concurrency = if load.workers > 0 {
            load.mean_running()
        } else if observed.interval_s > 0.0 {
            // Little's law, as Dynamo estimates it.
            let rate = observed.requests_per_s();
            let seconds = (observed.mean_ttft_ms.unwrap_or(0.0) + osl * itl) / 1000.0;
            rate * seconds / decoders.max(1) as f64
        } else {
            return;
        };
        let mut expected = self
            .profile
            .decode_itl_ms(concurrency.max(1.0), isl + osl / 2.0);
        if role == WorkerRole::Aggregated && observed.interval_s > 0.0 {
            // Prefill steals this share of an aggregated worker's time from decode steps.
            let uncached = isl * (1.0 - self.hit_rate());
            let rate = observed.requests_per_s();
            let per_worker =
                self.profile.prefill_tokens_per_s(uncached.max(1.0)) * decoders.max(1) as f64;
            let share = (rate * uncached / per_worker).clamp(0.0, 0.9);
            expected /= 1.0 - share;
        }
        self.itl_correction.observe(itl, expected);
    }

    /// Learn each pool's burstiness from the interval that ended: its utilisation (the
    /// interval's load over the profiled capacity of the workers that served it) against its
    /// mean TTFT (prefilling pools) and ITL (aggregated pools), each over what an unloaded
    /// worker shows for the same requests. An interval that began with more than one request
    /// waiting per worker teaches nothing.
    pub(super) fn learn_variability(&mut self, observed: &Observation, current: Replicas) {
        if self.config.variability_memory_s <= 0.0
            || observed.requests == 0
            || observed.interval_s <= 0.0
        {
            return;
        }
        let (isl, osl) = (observed.mean_input_tokens, observed.mean_output_tokens);
        let need = self.need(observed.requests_per_s(), isl, osl);
        let uncached = (isl * (1.0 - self.hit_rate())).max(1.0);
        let unloaded_ttft = self.profile.prefill_ttft_ms(uncached);
        for (role, n) in current.pools() {
            let load = PoolLoad::of(observed, role);
            let pool = slot(role);
            // An interval that began with a backlog shows how long the backlog took to drain,
            // not how the traffic queues: it is left out.
            let began_backlogged = self.backlog[pool];
            self.backlog[pool] = load.mean_waiting() > BACKLOG;
            if began_backlogged {
                continue;
            }
            let serving = if load.workers > 0 { load.workers } else { n }.max(1) as f64;
            let rho = need.of(role) / serving;
            if role != WorkerRole::Decode
                && let Some(ttft) = observed.mean_ttft_ms
            {
                self.ttft_variability[pool].observe(observed.interval_s, rho, ttft, unloaded_ttft);
            }
            // A decode pool's ITL grows with its batch, which its profile already says; an
            // aggregated pool's also with the prefills that share its steps, as a queue's
            // wait grows with the load.
            if role == WorkerRole::Aggregated
                && let Some(itl) = observed.mean_itl_ms
            {
                let batch = load.mean_running().max(1.0);
                let unloaded = self.profile.decode_itl_ms(batch, isl + osl / 2.0);
                self.itl_variability
                    .observe(observed.interval_s, rho, itl, unloaded);
            }
        }
    }

    /// The share of its profiled capacity a pool's plan may use: `utilisation`, or less where
    /// the learned burstiness says the mean latency would pass the setpoint (`setpoint` of
    /// the share of the room up to its limit past which the pool grows) at that load.
    pub(super) fn utilisation(&self, role: WorkerRole, limits: &Limits) -> f64 {
        let mut u = self.config.utilisation;
        if self.config.variability_memory_s <= 0.0 {
            return u;
        }
        let pool = slot(role);
        let aim = limits.grow_share * self.config.setpoint;
        let allowed = |limit: f64, unloaded: f64| {
            aim * (limit - unloaded).max(0.0) / unloaded.max(f64::MIN_POSITIVE)
        };
        if role != WorkerRole::Decode {
            let a = allowed(limits.ttft_ms, limits.unloaded_ttft_ms);
            if let Some(learned) = self.ttft_variability[pool].utilisation(a) {
                u = u.min(learned);
            }
        }
        if role == WorkerRole::Aggregated {
            let a = allowed(limits.itl_ms, limits.unloaded_itl_ms);
            if let Some(learned) = self.itl_variability.utilisation(a) {
                u = u.min(learned);
            }
        }
        u.max(LEAST_UTILISATION)
    }

    /// Fractional workers the forecast needs for prefill and for decode, before headroom.
    ///
    /// A decode worker whose steps take `c` (the ITL correction) times the profile's runs the
    /// batch whose profiled ITL is within the target over `c`, and makes `c` times fewer
    /// tokens a second than the profile says for that batch: its tokens per second are its
    /// batch over its ITL.
    pub(super) fn need(&self, rate: f64, isl: f64, osl: f64) -> Need {
        let uncached = isl * (1.0 - self.hit_rate());
        let prefill = if uncached > 0.0 {
            rate * uncached / self.profile.prefill_tokens_per_s(uncached)
        } else {
            0.0
        };
        let correction = self.itl_correction();
        let itl = self.config.targets.itl_ms / correction;
        let decode = rate * osl * correction
            / self
                .profile
                .decode_tokens_per_s_within(itl, isl + osl / 2.0);
        Need { prefill, decode }
    }

    /// What the last interval may show before a pool counts as short of workers. A prefilling
    /// worker may have as many requests waiting as it prefills in `queue_drain` of the TTFT
    /// target (at least one). A latency counts as a miss only past both its target and
    /// `unloaded_margin` times what one unloaded worker shows for the interval's prompts and
    /// contexts: more workers cannot make a long prompt faster than one worker computes it.
    pub(super) fn limits(&self, observed: &Observation, isl: f64) -> Limits {
        let uncached = (isl * (1.0 - self.hit_rate())).max(1.0);
        let seconds = self.config.queue_drain * self.config.targets.ttft_ms / 1000.0;
        let prefill_queue =
            (seconds * self.profile.prefill_tokens_per_s(uncached) / uncached).max(1.0);
        let hit = observed.kv_hit_rate.clamp(0.0, 1.0);
        let hit = if hit.is_finite() { hit } else { 0.0 };
        let prompt = (observed.mean_input_tokens * (1.0 - hit)).max(1.0);
        let context = observed.mean_input_tokens + observed.mean_output_tokens / 2.0;
        let margin = self.config.unloaded_margin;
        let targets = self.config.targets;
        let unloaded_ttft_ms = self.profile.prefill_ttft_ms(prompt);
        let unloaded_itl_ms = self.profile.decode_itl_ms(1.0, context);
        Limits {
            prefill_queue,
            decode_queue: self.config.queue_per_worker,
            ttft_ms: targets.ttft_ms.max(margin * unloaded_ttft_ms),
            unloaded_ttft_ms,
            itl_ms: targets.itl_ms.max(margin * unloaded_itl_ms),
            unloaded_itl_ms,
            kv_usage: self.config.kv_high,
            grow_share: self.config.grow_share(),
            calm_share: self.config.grow_share() / 2.0,
        }
    }
}
