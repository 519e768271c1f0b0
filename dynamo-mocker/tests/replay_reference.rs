//! The replay of one worker against a reference that steps the same engine by hand.
//!
//! The replay runs a worker's quiet decode steps in one go and takes back the ones a new
//! arrival cuts off; the reference steps one at a time, adding each request when the step in
//! progress at its arrival ends. Both must give every request the same first-token and finish
//! times, to the last bit.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use dynamo_core::BlockSize;
use dynamo_mocker::{
    EngineConfig, Replay, ReplayConfig, SimRequest, SimWorker, TraceRequest, engine_blocks,
};
use dynamo_router::RoundRobin;
use proptest::prelude::*;

const TRACE_BLOCK: u64 = 64;

fn config() -> ReplayConfig {
    ReplayConfig {
        workers: 1,
        engine: EngineConfig {
            num_gpu_blocks: 64,
            block_size: BlockSize::new(16).unwrap(),
            max_num_batched_tokens: 256,
            max_num_seqs: 4,
            host: None,
            disk: None,
        },
        trace_block_size: TRACE_BLOCK,
        ..ReplayConfig::default()
    }
}

/// First-token and finish times of each request, stepping the engine one step at a time.
fn reference(trace: &[TraceRequest], config: &ReplayConfig) -> Vec<(f64, f64)> {
    let mut worker = SimWorker::new(config.engine, config.timing.clone());
    let mut order: Vec<usize> = (0..trace.len()).collect();
    order.sort_by(|&a, &b| trace[a].timestamp.total_cmp(&trace[b].timestamp));
    let mut arrivals = order.into_iter().peekable();
    let add = |worker: &mut SimWorker, index: usize| {
        let request = &trace[index];
        worker.add_request(SimRequest {
            id: index as u64,
            prompt_blocks: engine_blocks(request, TRACE_BLOCK, config.engine.block_size).unwrap(),
            prompt_tokens: request.input_length.max(1),
            output_tokens: request.output_length.max(1),
        });
    };
    let mut times = vec![(f64::NAN, f64::NAN); trace.len()];
    let mut now = 0.0;
    loop {
        if worker.is_idle() {
            // An idle worker starts a step for the first arrival alone.
            let Some(index) = arrivals.next() else {
                break;
            };
            now = trace[index].timestamp;
            add(&mut worker, index);
        }
        let report = worker.step().unwrap();
        let end = now + report.duration_ms;
        // Requests that arrive before the step ends (or as it ends) join the next one.
        while let Some(index) = arrivals.next_if(|&i| trace[i].timestamp <= end) {
            add(&mut worker, index);
        }
        for &id in &report.first_tokens {
            times[id as usize].0 = end;
        }
        for &id in &report.finished {
            times[id as usize].1 = end;
        }
        now = end;
    }
    times
}

fn request() -> impl Strategy<Value = TraceRequest> {
    (
        0.0..2000.0f64,
        1u64..300,
        1u64..200,
        prop::collection::vec(0u64..4, 5),
    )
        .prop_map(|(timestamp, input_length, output_length, ids)| {
            let blocks = input_length.div_ceil(TRACE_BLOCK) as usize;
            TraceRequest {
                timestamp,
                input_length,
                output_length,
                // Shared prefixes now and then, so that cache hits shorten some prefills.
                hash_ids: ids[..blocks].to_vec(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_worker_replays_as_the_engine_steps_by_hand(
        trace in prop::collection::vec(request(), 1..12),
    ) {
        let config = config();
        let outcome = Replay::new(&trace, &config).policy(RoundRobin::new()).run().unwrap();
        let expected = reference(&trace, &config);
        for (record, (first, finish)) in outcome.records.iter().zip(expected) {
            prop_assert_eq!(record.first_token_ms.unwrap().to_bits(), first.to_bits(), "{:?}", record);
            prop_assert_eq!(record.finish_ms.unwrap().to_bits(), finish.to_bits(), "{:?}", record);
        }
    }
}

/// A request that arrives exactly as a quiet step ends joins the step after it, as the
/// reference has it, and not one step later.
#[test]
fn an_arrival_at_the_end_of_a_quiet_step_joins_the_next_step() {
    let config = config();
    let long = TraceRequest {
        timestamp: 0.0,
        input_length: 40,
        output_length: 150,
        hash_ids: vec![1],
    };
    // The end of each of the long request's steps while it runs alone.
    let mut alone = SimWorker::new(config.engine, config.timing.clone());
    alone.add_request(SimRequest {
        id: 0,
        prompt_blocks: engine_blocks(&long, TRACE_BLOCK, config.engine.block_size).unwrap(),
        prompt_tokens: 40,
        output_tokens: 150,
    });
    let mut ends = Vec::new();
    let mut now = 0.0;
    while let Some(report) = alone.step() {
        now += report.duration_ms;
        ends.push(now);
    }
    // Step 30 is in the middle of a run: the request decodes tokens 30 to 47 of a block.
    for step in [29, 30, 31] {
        let mut trace = vec![long.clone()];
        trace.push(TraceRequest {
            timestamp: ends[step],
            input_length: 20,
            output_length: 3,
            hash_ids: vec![2],
        });
        let outcome = Replay::new(&trace, &config)
            .policy(RoundRobin::new())
            .run()
            .unwrap();
        let expected = reference(&trace, &config);
        let times: Vec<(f64, f64)> = outcome
            .records
            .iter()
            .map(|r| (r.first_token_ms.unwrap(), r.finish_ms.unwrap()))
            .collect();
        assert_eq!(times, expected, "arrival at the end of step {step}");
        assert!(expected[1].0 > ends[step]);
    }
}
