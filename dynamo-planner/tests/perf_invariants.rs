//! Invariants of a profile's interpolation, whatever the table.

use std::collections::BTreeSet;

use dynamo_planner::perf::{DecodePoint, PerfProfile, PrefillPoint};
use proptest::prelude::*;

fn profiles() -> impl Strategy<Value = PerfProfile> {
    let prefill = prop::collection::btree_map(1u64..100_000, (1.0f64..1e4, 1.0f64..1e5), 1..8);
    let contexts = prop::collection::btree_set(1u64..100_000, 1..5);
    let concurrencies = prop::collection::btree_set(1u32..256, 1..6);
    let figures = prop::collection::vec((1.0f64..500.0, 1.0f64..1e4), 40);
    (prefill, contexts, concurrencies, figures).prop_filter_map(
        "a usable profile",
        |(prefill, contexts, concurrencies, figures): (_, BTreeSet<u64>, BTreeSet<u32>, Vec<_>)| {
            let prefill = prefill
                .into_iter()
                .map(|(input_tokens, (ttft_ms, tokens_per_s))| PrefillPoint {
                    input_tokens,
                    ttft_ms,
                    tokens_per_s,
                })
                .collect();
            let mut figures = figures.into_iter().cycle();
            let mut decode = Vec::new();
            for &context_tokens in &contexts {
                for &concurrency in &concurrencies {
                    let (itl_ms, tokens_per_s) = figures.next()?;
                    decode.push(DecodePoint {
                        context_tokens,
                        concurrency,
                        kv_usage: 0.5,
                        itl_ms,
                        tokens_per_s,
                    });
                }
            }
            PerfProfile::new(prefill, decode).ok()
        },
    )
}

proptest! {
    #[test]
    fn a_looser_itl_target_never_lowers_the_throughput(
        profile in profiles(),
        a in 0.5f64..600.0,
        b in 0.5f64..600.0,
        context in 0.0f64..120_000.0,
    ) {
        let (tight, loose) = (a.min(b), a.max(b));
        let slack = 1e-9 * 1e4;
        prop_assert!(
            profile.decode_tokens_per_s_within(tight, context)
                <= profile.decode_tokens_per_s_within(loose, context) + slack
        );
    }

    #[test]
    fn prefill_stays_within_the_measured_range(profile in profiles(), input in 0.0f64..200_000.0) {
        let tps = profile.prefill().iter().map(|p| p.tokens_per_s);
        let lo = tps.clone().fold(f64::INFINITY, f64::min);
        let hi = tps.fold(f64::NEG_INFINITY, f64::max);
        let v = profile.prefill_tokens_per_s(input);
        prop_assert!(v >= lo - 1e-6 && v <= hi + 1e-6);
    }

    /// serde_json reads floats to within an ulp or so, not always exactly.
    #[test]
    fn json_round_trips(profile in profiles()) {
        let back = PerfProfile::from_json(&profile.to_json());
        prop_assert!(back.is_ok());
        let Ok(back) = back else { return Ok(()) };
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
        prop_assert_eq!(back.decode().len(), profile.decode().len());
        prop_assert_eq!(back.prefill().len(), profile.prefill().len());
        for (a, b) in back.decode().iter().zip(profile.decode()) {
            prop_assert_eq!((a.context_tokens, a.concurrency), (b.context_tokens, b.concurrency));
            prop_assert!(near(a.itl_ms, b.itl_ms) && near(a.tokens_per_s, b.tokens_per_s));
        }
        for (a, b) in back.prefill().iter().zip(profile.prefill()) {
            prop_assert_eq!(a.input_tokens, b.input_tokens);
            prop_assert!(near(a.ttft_ms, b.ttft_ms) && near(a.tokens_per_s, b.tokens_per_s));
        }
    }
}
