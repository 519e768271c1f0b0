//! The cost of one routing decision (snapshot, policy, booking) on the Mooncake trace, at 8,
//! 64 and 256 workers, per policy. The baseline, in the same run, is round-robin through the
//! same selector: the difference is what the cache-aware policies add.
//!
//! Each request of the trace is routed with its 512-token blocks; the last 64 requests' loads
//! stay booked, as if they were still streaming, and the cache knowledge is the approximate
//! index, fed by the decisions themselves.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{BlockSize, SequenceHash, WorkerId};
use dynamo_router::{
    ApproxConfig, ApproxIndex, ExpectedTtft, KvCost, LeastLoaded, PowerOfTwoChoices, RoundRobin,
    RouteRequest, Router, SelectorConfig, WorkerSelector,
};

#[expect(
    dead_code,
    reason = "this bench reads the trace only; the event generator serves the index bench"
)]
#[path = "support/trace_events.rs"]
mod trace_events;

type PolicyFactory = fn() -> Box<dyn Router>;

const IN_FLIGHT: usize = 64;
const TRACE_BLOCK: u64 = 512;

fn requests(trace: &[Vec<u64>]) -> Vec<RouteRequest> {
    trace
        .iter()
        .map(|ids| RouteRequest {
            blocks: ids
                .iter()
                .map(|&id| SequenceHash(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect(),
            prompt_tokens: ids.len() as u64 * TRACE_BLOCK,
            expected_output_tokens: None,
            session_id: None,
            priority: 0,
        })
        .collect()
}

fn route_all(selector: &WorkerSelector, requests: &[RouteRequest]) {
    let now = Instant::now();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    for request in requests {
        if in_flight.len() == IN_FLIGHT {
            in_flight.pop_front();
        }
        if let Ok(routed) = selector.select(black_box(request), now) {
            in_flight.push_back(routed.guard);
        }
    }
}

fn selector(workers: u64, policy: impl Router) -> WorkerSelector {
    let block_size = BlockSize::new(TRACE_BLOCK as u32).expect("non-zero");
    let source = ApproxIndex::new(block_size, ApproxConfig::default());
    let selector = WorkerSelector::new(SelectorConfig::new(block_size), policy, source);
    for w in 0..workers {
        selector.insert_worker(WorkerId::new(w));
    }
    selector
}

fn routing(c: &mut Criterion) {
    let requests = requests(&trace_events::load_trace());
    for workers in [8u64, 64, 256] {
        let mut group = c.benchmark_group(format!("routing_w{workers}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(requests.len() as u64));
        let policies: [(&str, PolicyFactory); 5] = [
            ("baseline_round_robin", || Box::new(RoundRobin::new())),
            ("least_loaded", || Box::new(LeastLoaded::new(Some(1)))),
            ("power_of_two", || Box::new(PowerOfTwoChoices::new(Some(1)))),
            ("kv_cost", || Box::new(KvCost::default())),
            ("expected_ttft", || Box::new(ExpectedTtft::default())),
        ];
        for (name, policy) in policies {
            group.bench_function(name, |b| {
                b.iter_batched(
                    || selector(workers, policy()),
                    |selector| route_all(&selector, &requests),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, routing);
criterion_main!(benches);
