//! The pieces a replay is built from: its workers, the records of its requests before they
//! arrive, and the router's view of a trace request.

use std::collections::VecDeque;
use std::time::Instant;

use dynamo_core::WorkerId;
use dynamo_router::{OverlapSource, RouteRequest};

use super::Worker;
use crate::engine::{SimWorker, StepReport};
use crate::replay::ReplayConfig;
use crate::summary::RequestRecord;
use crate::trace::TraceRequest;

/// Knows no cached block.
pub(super) struct NoKnowledge;

impl OverlapSource for NoKnowledge {
    fn overlaps(
        &self,
        _blocks: &[dynamo_core::SequenceHash],
        _now: Instant,
    ) -> dynamo_router::Overlaps {
        dynamo_router::Overlaps::default()
    }
    fn routed(&self, _worker: WorkerId, _blocks: &[dynamo_core::SequenceHash], _now: Instant) {}
    fn remove_worker(&self, _worker: WorkerId) {}
}

/// A worker of `pool`; its KV events are recorded only when an index consumes them.
pub(super) fn new_worker(id: WorkerId, pool: usize, config: &ReplayConfig, events: bool) -> Worker {
    Worker {
        id,
        pool,
        engine: SimWorker::new(config.engine, config.timing.clone()).record_events(events),
        report: StepReport::default(),
        due_ms: 0.0,
        run_ends: Vec::new(),
        next_event_id: 0,
        in_transit: VecDeque::new(),
        asked_ms: 0.0,
        removed_ms: None,
    }
}

/// The record of a request before it arrives.
pub(super) fn record(index: usize, trace: &TraceRequest) -> RequestRecord {
    RequestRecord {
        index,
        worker: u64::MAX,
        arrival_ms: f64::NAN,
        first_token_ms: None,
        finish_ms: None,
        input_tokens: trace.input_length,
        cached_tokens: 0,
        host_cached_tokens: 0,
        disk_cached_tokens: 0,
        output_tokens: trace.output_length.max(1),
        prefill_worker: None,
        prefill_done_ms: None,
        kv_arrival_ms: None,
    }
}

/// The router's view of a trace request whose prompt has these engine blocks.
pub(super) fn route(trace: &TraceRequest, blocks: &[dynamo_core::HashedBlock]) -> RouteRequest {
    RouteRequest {
        blocks: blocks.iter().map(|b| b.sequence).collect(),
        prompt_tokens: trace.input_length,
        expected_output_tokens: None,
        sequences: 1,
        session_id: None,
        priority: 0,
    }
}
