//! NVIDIA Dynamo's throughput-based SLA planner, as its design document describes it.

use serde::{Deserialize, Serialize};

use super::pool::{resize, whole};
use super::{Forecast, Policy, Proposal, SlaTargets};
use crate::observe::Observation;
use crate::perf::{Correction, PerfProfile};
use crate::plan::Replicas;
use dynamo_core::WorkerRole;

/// The settings of [`DynamoSla`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamoSlaConfig {
    /// The latency targets.
    pub targets: SlaTargets,
}

/// NVIDIA Dynamo's throughput-based SLA planner, the baseline our own policies are measured
/// against. Written from Dynamo's published planner design, not from its code.
///
/// Each interval it updates two correction factors from what it observed:
///
/// ```text
/// prefill_correction = observed TTFT / profile TTFT(observed ISL)
/// decode_correction  = observed ITL  / profile ITL(concurrency, ISL + OSL/2)
/// concurrency        = arrivals per s × (TTFT + OSL × ITL) / decode workers   (Little's law)
/// ```
///
/// and then, from the forecast of the next interval (rate, ISL, OSL):
///
/// ```text
/// prefill workers = ⌈rate × ISL × min(1, prefill_correction) / profile prefill tokens/s(ISL)⌉
/// decode workers  = ⌈rate × OSL / profile decode tokens/s within (target ITL / decode_correction)
///                                                           at context ISL + OSL/2⌉
/// ```
///
/// The corrections are not smoothed: each interval's ratio replaces the last, as in Dynamo.
/// For an aggregated pool it takes the larger of the two requirements; Dynamo's design
/// describes the disaggregated computation, and its own aggregated planner may combine them
/// differently. This is the throughput-based part only: Dynamo 1.6.1's `sla` target can also
/// run a load-based loop on a shorter interval (online regression over live engine metrics),
/// which is not reproduced here.
#[derive(Debug, Clone)]
pub struct DynamoSla {
    config: DynamoSlaConfig,
    profile: PerfProfile,
    prefill_correction: Correction,
    decode_correction: Correction,
}

impl DynamoSla {
    /// The planner for `profile`'s workers and `config`'s targets.
    pub fn new(profile: PerfProfile, config: DynamoSlaConfig) -> Self {
        DynamoSla {
            config,
            profile,
            prefill_correction: Correction::default(),
            decode_correction: Correction::default(),
        }
    }

    /// The current correction factors `(prefill, decode)`.
    pub fn corrections(&self) -> (f64, f64) {
        (
            self.prefill_correction.factor(),
            self.decode_correction.factor(),
        )
    }

    fn learn(&mut self, observed: &Observation, current: Replicas) {
        if observed.requests == 0 || observed.interval_s <= 0.0 {
            return;
        }
        let (isl, osl) = (observed.mean_input_tokens, observed.mean_output_tokens);
        if let Some(ttft) = observed.mean_ttft_ms {
            self.prefill_correction
                .observe(ttft, self.profile.prefill_ttft_ms(isl));
        }
        if let Some(itl) = observed.mean_itl_ms {
            let decoders = match current {
                Replicas::Aggregated(n) => n,
                Replicas::Disaggregated { decode, .. } => decode,
            }
            .max(1) as f64;
            let rate = observed.requests_per_s();
            let seconds = (observed.mean_ttft_ms.unwrap_or(0.0) + osl * itl) / 1000.0;
            let concurrency = (rate * seconds / decoders).max(1.0);
            let expected = self.profile.decode_itl_ms(concurrency, isl + osl / 2.0);
            self.decode_correction.observe(itl, expected);
        }
    }
}

impl Policy for DynamoSla {
    fn name(&self) -> &'static str {
        "dynamo_sla"
    }

    fn plan(&mut self, observed: &Observation, forecast: &Forecast, current: Replicas) -> Proposal {
        self.learn(observed, current);
        let Forecast {
            requests_per_s: rate,
            input_tokens: isl,
            output_tokens: osl,
        } = *forecast;
        let (prefill_correction, decode_correction) = self.corrections();
        let prefill_per_worker = self.profile.prefill_tokens_per_s(isl);
        let prefill = whole(rate * isl * prefill_correction.min(1.0) / prefill_per_worker);
        let itl = self.config.targets.itl_ms / decode_correction;
        let context = isl + osl / 2.0;
        let decode_per_worker = self.profile.decode_tokens_per_s_within(itl, context);
        let decode = whole(rate * osl / decode_per_worker);
        let target = resize(current, |role, _| match role {
            WorkerRole::Aggregated => prefill.max(decode),
            WorkerRole::Prefill => prefill,
            WorkerRole::Decode => decode,
        });
        let reason = format!(
            "{rate:.2} req/s of {isl:.0} input tokens × min(1, prefill correction {prefill_correction:.2}) \
             over {prefill_per_worker:.0} prefill tokens/s per worker needs {prefill} prefill worker(s); \
             {rate:.2} req/s of {osl:.0} output tokens at ITL {itl:.1} ms (target {:.0} ms / decode \
             correction {decode_correction:.2}) and context {context:.0} gives {decode_per_worker:.0} \
             tokens/s per worker and needs {decode} decode worker(s){}",
            self.config.targets.itl_ms,
            match current {
                Replicas::Aggregated(_) =>
                    format!("; aggregated takes the larger, {}", prefill.max(decode)),
                Replicas::Disaggregated { .. } => String::new(),
            }
        );
        Proposal::new(target, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::tests::sample;

    fn observation(requests: u64, ttft: f64, itl: f64) -> Observation {
        Observation {
            interval_s: 60.0,
            requests,
            mean_input_tokens: 1000.0,
            mean_output_tokens: 200.0,
            mean_ttft_ms: Some(ttft),
            mean_itl_ms: Some(itl),
            ..Observation::default()
        }
    }

    #[test]
    fn computes_dynamos_replica_counts() -> Result<(), crate::Error> {
        let mut policy = DynamoSla::new(sample()?, DynamoSlaConfig::default());
        // The profile expects 50 ms TTFT at 1000 tokens: observed 50 gives correction 1.
        // 4 req/s × 1000 tokens over 20 000 tokens/s per worker = 0.2 → 1 prefill worker.
        // Decode: 4 req/s × 200 = 800 tokens/s; at ITL 50 ms and context 1100 the profile
        // gives about 498 tokens/s → 2 decode workers.
        let forecast = Forecast {
            requests_per_s: 4.0,
            input_tokens: 1000.0,
            output_tokens: 200.0,
        };
        let current = Replicas::Disaggregated {
            prefill: 1,
            decode: 1,
        };
        let observed = observation(0, 50.0, 20.0);
        let proposal = policy.plan(&observed, &forecast, current);
        assert_eq!(
            proposal.target,
            Replicas::Disaggregated {
                prefill: 1,
                decode: 2
            }
        );
        assert!(
            proposal.reason.contains("4.00 req/s"),
            "{}",
            proposal.reason
        );
        let proposal = policy.plan(
            &observed,
            &Forecast {
                requests_per_s: 90.0,
                ..forecast
            },
            current,
        );
        // 90 × 1000 / 20 000 = 4.5 → 5; 90 × 200 / 489.1 = 36.8 → 37.
        assert_eq!(
            proposal.target,
            Replicas::Disaggregated {
                prefill: 5,
                decode: 37
            }
        );
        Ok(())
    }

    #[test]
    fn corrections_follow_observed_latencies() -> Result<(), crate::Error> {
        let mut policy = DynamoSla::new(sample()?, DynamoSlaConfig::default());
        let forecast = Forecast {
            requests_per_s: 40.0,
            input_tokens: 1000.0,
            output_tokens: 200.0,
        };
        // TTFT twice the profile's; min(1, 2) keeps prefill at the profile's need.
        let slow = observation(60, 100.0, 40.0);
        let before = policy.plan(
            &observation(0, 0.0, 0.0),
            &forecast,
            Replicas::Aggregated(2),
        );
        let after = policy.plan(&slow, &forecast, Replicas::Aggregated(2));
        let (prefill, decode) = policy.corrections();
        assert!((prefill - 2.0).abs() < 1e-9);
        assert!(decode > 1.0, "{decode}");
        assert!(
            after.target.total() > before.target.total(),
            "{} {}",
            before.reason,
            after.reason
        );
        assert!(after.reason.contains("aggregated takes the larger"));
        Ok(())
    }
}
