use super::*;

fn prefill(input_tokens: u64, ttft_ms: f64, tokens_per_s: f64) -> PrefillPoint {
    PrefillPoint {
        input_tokens,
        ttft_ms,
        tokens_per_s,
    }
}

fn decode(context_tokens: u64, concurrency: u32, itl_ms: f64, tokens_per_s: f64) -> DecodePoint {
    DecodePoint {
        context_tokens,
        concurrency,
        kv_usage: 0.1,
        itl_ms,
        tokens_per_s,
    }
}

pub(crate) fn sample() -> Result<PerfProfile, Error> {
    PerfProfile::new(
        vec![
            prefill(100, 10.0, 10_000.0),
            prefill(1000, 50.0, 20_000.0),
            prefill(4000, 400.0, 10_000.0),
        ],
        vec![
            decode(1000, 1, 10.0, 100.0),
            decode(1000, 8, 20.0, 400.0),
            decode(1000, 32, 60.0, 1600.0 / 3.0),
            decode(3000, 1, 12.0, 250.0 / 3.0),
            decode(3000, 8, 30.0, 800.0 / 3.0),
            decode(3000, 32, 100.0, 320.0),
        ],
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn prefill_interpolates_clamps_and_extends_the_ttft_past_the_longest_prompt() -> Result<(), Error> {
    let p = sample()?;
    assert!(close(p.prefill_ttft_ms(550.0), 30.0));
    assert!(close(p.prefill_ttft_ms(10.0), 10.0));
    // 6,000 tokens past the longest prompt, at its 10,000 tokens a second.
    assert!(close(p.prefill_ttft_ms(10_000.0), 400.0 + 600.0));
    assert!(close(p.prefill_tokens_per_s(2500.0), 15_000.0));
    assert!(close(p.prefill_tokens_per_s(1e6), 10_000.0));
    Ok(())
}

#[test]
fn decode_interpolates_bilinearly() -> Result<(), Error> {
    let p = sample()?;
    // Half-way between concurrency 1 and 8 is 4.5; half-way between contexts 1000 and 3000.
    assert!(close(p.decode_itl_ms(4.5, 2000.0), (15.0 + 21.0) / 2.0));
    assert!(close(p.decode_itl_ms(100.0, 1e6), 100.0));
    assert!(close(p.decode_tokens_per_s(8.0, 1000.0), 400.0));
    Ok(())
}

#[test]
fn past_the_longest_context_a_batch_reads_as_one_holding_as_many_tokens() -> Result<(), Error> {
    let p = sample()?;
    // 4 requests of 6,000 tokens hold what 8 of 3,000 do: 30 ms a step, 4 tokens a step.
    assert!(close(p.decode_itl_ms(4.0, 6000.0), 30.0));
    assert!(close(p.decode_tokens_per_s(4.0, 6000.0), 4.0 / 0.030));
    assert!(close(
        p.decode_tokens_per_s_within(30.0, 6000.0),
        4.0 / 0.030
    ));
    // One request of 6,000 tokens is a batch of 2 at 3,000, between the points 1 and 8.
    assert!(close(p.decode_itl_ms(1.0, 6000.0), 12.0 + 18.0 / 7.0));
    // At the longest context itself, and just inside it, the row as it is.
    assert!(close(
        p.decode_tokens_per_s_within(30.0, 3000.0),
        800.0 / 3.0
    ));
    assert!(p.decode_tokens_per_s_within(30.0, 3000.5) < 800.0 / 3.0);
    Ok(())
}

#[test]
fn best_throughput_within_an_itl_target() -> Result<(), Error> {
    let p = sample()?;
    assert!(close(p.decode_tokens_per_s_within(20.0, 1000.0), 400.0));
    // Half-way from (20 ms, 400) to (60 ms, 533.3).
    assert!(close(
        p.decode_tokens_per_s_within(40.0, 1000.0),
        400.0 + 200.0 / 3.0
    ));
    // At 30 ms: 433.3 at context 1000, 266.7 at 3000; 350 half-way between.
    assert!(close(p.decode_tokens_per_s_within(30.0, 2000.0), 350.0));
    // Beyond the table: its edges.
    assert!(close(
        p.decode_tokens_per_s_within(1000.0, 1000.0),
        1600.0 / 3.0
    ));
    assert!(close(p.decode_tokens_per_s_within(20.0, 10.0), 400.0));
    // No batch size meets 5 ms: the lowest ITL's throughput.
    assert!(close(p.decode_tokens_per_s_within(5.0, 1000.0), 100.0));
    Ok(())
}

#[test]
fn unusable_tables_are_refused() {
    let good = || sample().map(|p| (p.prefill().to_vec(), p.decode().to_vec()));
    let Ok((pre, dec)) = good() else {
        panic!("the sample profile is usable");
    };
    let cases: Vec<(Vec<PrefillPoint>, Vec<DecodePoint>)> = vec![
        (vec![], dec.clone()),
        (pre.clone(), vec![]),
        (vec![pre[1], pre[0]], dec.clone()),
        (vec![pre[0], pre[0]], dec.clone()),
        (vec![prefill(10, f64::NAN, 1.0)], dec.clone()),
        (vec![prefill(10, 1.0, 0.0)], dec.clone()),
        (pre.clone(), vec![dec[1], dec[0]]),
        (pre.clone(), vec![dec[3], dec[0]]),
        (pre.clone(), vec![decode(10, 1, f64::INFINITY, 1.0)]),
        (pre.clone(), vec![decode(10, 0, 1.0, 1.0)]),
    ];
    for (i, (pre, dec)) in cases.into_iter().enumerate() {
        assert!(
            matches!(PerfProfile::new(pre, dec), Err(Error::Profile { .. })),
            "case {i}"
        );
    }
}

#[test]
fn json_round_trips_and_is_checked_on_load() -> Result<(), Box<dyn std::error::Error>> {
    let p = sample()?.with_engine("mocker");
    let back = PerfProfile::from_json(&p.to_json())?;
    assert_eq!(back, p);
    assert_eq!(back.engine(), Some("mocker"));
    assert!(close(
        back.decode_tokens_per_s_within(40.0, 1000.0),
        400.0 + 200.0 / 3.0
    ));
    let unsorted = r#"{"prefill": [{"input_tokens": 9, "ttft_ms": 1, "tokens_per_s": 9},
        {"input_tokens": 3, "ttft_ms": 1, "tokens_per_s": 3}],
        "decode": [{"context_tokens": 1, "concurrency": 1, "kv_usage": 0, "itl_ms": 1, "tokens_per_s": 1}]}"#;
    assert!(matches!(
        PerfProfile::from_json(unsorted),
        Err(Error::Profile { .. })
    ));
    Ok(())
}

#[test]
fn files_load_and_missing_files_are_profile_errors() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("dynamo-planner-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("profile.json");
    std::fs::write(&path, sample()?.to_json())?;
    assert_eq!(PerfProfile::from_json_file(&path)?, sample()?);
    std::fs::remove_dir_all(&dir)?;
    assert!(matches!(
        PerfProfile::from_json_file(&path),
        Err(Error::Profile { .. })
    ));
    Ok(())
}

#[test]
fn corrections_smooth_ratios() {
    let mut c = Correction::new(0.5);
    assert_eq!(c.factor(), 1.0);
    assert!(!c.is_known());
    c.observe(200.0, 100.0);
    assert_eq!(c.factor(), 2.0);
    c.observe(100.0, 100.0);
    assert_eq!(c.factor(), 1.5);
    c.observe(f64::NAN, 100.0);
    c.observe(100.0, 0.0);
    assert_eq!(c.factor(), 1.5);
    let mut raw = Correction::default();
    raw.observe(1e6, 1.0);
    assert_eq!(raw.factor(), Correction::RATIO_RANGE.1);
    raw.observe(30.0, 60.0);
    assert_eq!(raw.factor(), 0.5);
}
