use std::collections::{HashMap, HashSet};

use super::*;

const PATTERNS: [SharingPattern; 5] = [
    SharingPattern::ManyShortChats,
    SharingPattern::FewLongChats,
    SharingPattern::HotPrefix,
    SharingPattern::Documents,
    SharingPattern::NoSharing,
];

fn trace(pattern: SharingPattern, seed: u64) -> Vec<TraceRequest> {
    generate(&WorkloadConfig {
        requests: 1000,
        ..WorkloadConfig::new(pattern, seed)
    })
}

/// The share of prompt blocks that some earlier request already had at the same position
/// after the same blocks (the reuse an infinite cache would see).
fn repeated_share(trace: &[TraceRequest]) -> f64 {
    let mut seen = HashSet::new();
    let (mut repeated, mut total) = (0usize, 0usize);
    for r in trace {
        let prefix = r
            .hash_ids
            .iter()
            .take_while(|id| seen.contains(*id))
            .count();
        repeated += prefix;
        total += r.hash_ids.len();
        seen.extend(r.hash_ids.iter().copied());
    }
    repeated as f64 / total as f64
}

#[test]
fn every_pattern_makes_a_well_formed_trace() {
    for pattern in PATTERNS {
        let trace = trace(pattern, 1);
        assert_eq!(trace.len(), 1000, "{pattern:?}");
        assert!(trace.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        assert!(trace.iter().all(|r| r.timestamp.fract() == 0.0));
        // Its ids cover the prompt, and an id always follows the same id: equal ids are equal
        // prefixes, as the replay assumes.
        let mut parent = HashMap::new();
        for r in &trace {
            assert!(r.input_length > 0 && r.output_length > 0);
            assert_eq!(
                r.hash_ids.len() as u64,
                r.input_length.div_ceil(TRACE_BLOCK_TOKENS)
            );
            let mut before = None;
            for &id in &r.hash_ids {
                assert_eq!(*parent.entry(id).or_insert(before), before, "{pattern:?}");
                before = Some(id);
            }
        }
        // The mean rate is near the asked one.
        let span_s = trace.last().map_or(0.0, |r| r.timestamp) / 1000.0;
        let rate = trace.len() as f64 / span_s;
        let asked = WorkloadConfig::new(pattern, 1).rate();
        assert!(
            (rate / asked - 1.0).abs() < 0.35,
            "{pattern:?}: {rate} for {asked}"
        );
    }
}

#[test]
fn a_seed_gives_one_trace() {
    for pattern in PATTERNS {
        assert_eq!(trace(pattern, 3), trace(pattern, 3));
        assert_ne!(trace(pattern, 3), trace(pattern, 4));
    }
}

#[test]
fn the_patterns_share_as_they_say() {
    let share = |pattern| repeated_share(&trace(pattern, 1));
    assert_eq!(share(SharingPattern::NoSharing), 0.0);
    // A hot 16-block system prompt before a short message: most blocks are repeats.
    assert!(share(SharingPattern::HotPrefix) > 0.8);
    // Conversations repeat their history; long ones far more than short ones.
    let short = share(SharingPattern::ManyShortChats);
    let long = share(SharingPattern::FewLongChats);
    assert!(short > 0.2 && long > 0.85 && long > short, "{short} {long}");
    let documents = share(SharingPattern::Documents);
    assert!(documents > 0.5, "{documents}");
}

#[test]
fn a_conversation_turn_extends_the_previous_one() {
    let trace = trace(SharingPattern::FewLongChats, 2);
    // Each request after the first 16 extends an earlier one: all of that one's full blocks
    // lead its prompt.
    let extends = trace
        .iter()
        .enumerate()
        .skip(16)
        .filter(|(i, r)| {
            trace[..*i].iter().any(|earlier| {
                let full = (earlier.input_length / TRACE_BLOCK_TOKENS) as usize;
                full > 0 && r.hash_ids.starts_with(&earlier.hash_ids[..full])
            })
        })
        .count();
    assert!(
        extends as f64 > 0.9 * (trace.len() - 16) as f64,
        "{extends}"
    );
}

#[test]
fn a_written_trace_reads_back() {
    let trace = trace(SharingPattern::ManyShortChats, 5);
    let mut text = Vec::new();
    write_mooncake(&trace, &mut text).expect("writes");
    let dir = std::env::temp_dir().join(format!("workload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("trace.jsonl");
    std::fs::write(&path, &text).expect("file");
    let read = crate::load_mooncake(&path).expect("reads");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(read, trace);
}
