//! What an engine server's KV events lose, on the frontend's `/metrics`: the problems
//! (`dynamo_engine_kv_event_errors_total{worker, error}`), what the decoder skips
//! (`dynamo_engine_kv_events_skipped_total{worker, reason}`), and the restarts that clear the
//! server's blocks (`dynamo_engine_restarts_total{worker}`).
//!
//! Each counter is resolved once per worker and name (the frontend installs its recorder
//! before it attaches the engine servers), so counting allocates nothing. The skipped counts
//! are totals kept by the decoders, set (not added to) whenever they change.

use std::fmt::Display;

use dynamo_core::{KvEvent, WorkerId};
use dynamo_transport::engine_events::EngineEventCounts;
use dynamo_trtllm::EventCounts;
use futures::{Stream, StreamExt};
use metrics::Counter;
use tokio::sync::watch;

const ERRORS: &str = "dynamo_engine_kv_event_errors_total";
const SKIPPED: &str = "dynamo_engine_kv_events_skipped_total";
const RESTARTS: &str = "dynamo_engine_restarts_total";

/// `name`'s counter for `worker`, labelled `label` = `value`.
fn counter(name: &'static str, worker: &str, label: &'static str, value: &'static str) -> Counter {
    metrics::counter!(name, "worker" => worker.to_owned(), label => value)
}

/// An engine's events for the index, each problem logged and counted
/// (`dynamo_engine_kv_event_errors_total`, by worker and `name` of the problem) on the way.
pub(super) fn logged<E: Display + 'static>(
    worker: WorkerId,
    events: impl Stream<Item = Result<KvEvent, E>> + Send + 'static,
    name: fn(&E) -> &'static str,
) -> impl Stream<Item = KvEvent> + Send + 'static {
    let label = worker.to_string();
    // One counter per name met, resolved the first time.
    let mut counters: Vec<(&'static str, Counter)> = Vec::new();
    events.filter_map(move |event| {
        std::future::ready(match event {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%worker, %error, "engine KV events");
                let name = name(&error);
                let at = match counters.iter().position(|(known, _)| *known == name) {
                    Some(at) => at,
                    None => {
                        counters.push((name, counter(ERRORS, &label, "error", name)));
                        counters.len() - 1
                    }
                };
                if let Some((_, counter)) = counters.get(at) {
                    counter.increment(1);
                }
                None
            }
        })
    })
}

/// The skips of a vLLM or SGLang server's events: events of KV cache groups not followed,
/// removed blocks never seen stored, stored blocks the decoder cannot hash (offloaded chunks
/// named by a hash it never saw stored, blocks after an unknown parent, token ids that do not
/// fill their blocks), and blocks of a medium the decoder does not know.
pub(super) fn zmq_skips(counts: &EngineEventCounts) -> [(&'static str, u64); 6] {
    [
        ("other_groups", counts.other_groups),
        ("unknown_removed", counts.unknown_removed),
        ("tokenless", counts.tokenless),
        ("unknown_parent", counts.unknown_parent),
        ("misaligned", counts.misaligned),
        ("unknown_medium", counts.unknown_medium),
    ]
}

/// The skips of a TensorRT-LLM server's events: every count of [`EventCounts`] of events or
/// blocks the index does not get (an `updated` event that moves no block loses nothing, and
/// malformed answers, block-size mismatches and gaps are errors).
pub(super) fn trtllm_skips(counts: &EventCounts) -> [(&'static str, u64); 9] {
    [
        ("other_groups", counts.other_groups),
        ("unknown_removed", counts.unknown_removed),
        ("unknown_parent", counts.unknown_parent),
        ("unknown_updated", counts.unknown_updated),
        ("unknown_types", counts.unknown_types),
        ("unknown_levels", counts.unknown_levels),
        ("partial_blocks", counts.partial_blocks),
        ("multimodal_blocks", counts.multimodal_blocks),
        ("over_capacity", counts.over_capacity),
    ]
}

/// Export a server's skipped events (`dynamo_engine_kv_events_skipped_total`, by worker and
/// `reason`, each reason a name of `skips`) whenever its decoder's `counts` change, once
/// something was skipped; ends when the decoder is dropped.
pub(super) async fn export_skipped<T, const N: usize>(
    worker: WorkerId,
    mut counts: watch::Receiver<T>,
    skips: fn(&T) -> [(&'static str, u64); N],
) {
    let label = worker.to_string();
    let counters =
        skips(&counts.borrow()).map(|(reason, _)| counter(SKIPPED, &label, "reason", reason));
    while counts.changed().await.is_ok() {
        let now = skips(&counts.borrow_and_update());
        if now.iter().all(|&(_, value)| value == 0) {
            continue;
        }
        for (counter, (_, value)) in counters.iter().zip(now) {
            counter.absolute(value);
        }
    }
}

/// Export how often a vLLM or SGLang server was found restarted, its blocks cleared from the
/// index (`dynamo_engine_restarts_total`, by worker), whenever its subscriber's `counts`
/// change; ends when the subscriber stops.
pub(super) async fn export_restarts(
    worker: WorkerId,
    mut counts: watch::Receiver<EngineEventCounts>,
) {
    let restarts = metrics::counter!(RESTARTS, "worker" => worker.to_string());
    while counts.changed().await.is_ok() {
        restarts.absolute(counts.borrow_and_update().restarts);
    }
}
