//! What an engine server's KV events lose, on the frontend's `/metrics`: the problems
//! (`dynamo_engine_kv_event_errors_total{worker, error}`) and what the decoder skips
//! (`dynamo_engine_kv_events_skipped_total{worker, reason}`).
//!
//! Each counter's key is built once per worker and name, and resolved against the process's
//! recorder when it is counted: the frontend installs its Prometheus recorder after the engine
//! servers are attached, and a counter resolved before that would count nowhere for good.
//! Resolving a key that is registered allocates nothing. The skipped counts are totals kept by
//! the decoders, so they are set (not added to) at each change and every few seconds, which
//! also brings over what was skipped before the recorder was there.

use std::fmt::Display;
use std::time::Duration;

use dynamo_core::{KvEvent, WorkerId};
use dynamo_transport::engine_events::EngineEventCounts;
use dynamo_trtllm::EventCounts;
use futures::{Stream, StreamExt};
use metrics::{Counter, Key, Label, Level, Metadata};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

const ERRORS: &str = "dynamo_engine_kv_event_errors_total";
const SKIPPED: &str = "dynamo_engine_kv_events_skipped_total";

/// How often the skipped counts are set again without a change.
const REFRESH: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A counter named and labelled once, resolved at each use.
struct CounterKey(Key);

impl CounterKey {
    fn new(name: &'static str, worker: &str, label: &'static str, value: &'static str) -> Self {
        let labels = vec![
            Label::new("worker", worker.to_owned()),
            Label::new(label, value),
        ];
        CounterKey(Key::from_parts(name, labels))
    }

    fn counter(&self) -> Counter {
        metrics::with_recorder(|recorder| recorder.register_counter(&self.0, &METADATA))
    }
}

/// An engine's events for the index, each problem logged and counted
/// (`dynamo_engine_kv_event_errors_total`, by worker and `name` of the problem) on the way.
pub(super) fn logged<E: Display + 'static>(
    worker: WorkerId,
    events: impl Stream<Item = Result<KvEvent, E>> + Send + 'static,
    name: fn(&E) -> &'static str,
) -> impl Stream<Item = KvEvent> + Send + 'static {
    let label = worker.to_string();
    // One key per name met, built the first time.
    let mut keys: Vec<(&'static str, CounterKey)> = Vec::new();
    events.filter_map(move |event| {
        std::future::ready(match event {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::warn!(%worker, %error, "engine KV events");
                let name = name(&error);
                let at = match keys.iter().position(|(known, _)| *known == name) {
                    Some(at) => at,
                    None => {
                        keys.push((name, CounterKey::new(ERRORS, &label, "error", name)));
                        keys.len() - 1
                    }
                };
                if let Some((_, key)) = keys.get(at) {
                    key.counter().increment(1);
                }
                None
            }
        })
    })
}

/// The skips of a vLLM or SGLang server's events: events of KV cache groups not followed,
/// removed blocks never seen stored.
pub(super) fn zmq_skips(counts: &EngineEventCounts) -> [(&'static str, u64); 2] {
    [
        ("other_groups", counts.other_groups),
        ("unknown_removed", counts.unknown_removed),
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
/// `reason`, each reason a name of `skips`) when its decoder's `counts` change and every
/// [`REFRESH`], once something was skipped; ends when the decoder is dropped.
pub(super) async fn export_skipped<T, const N: usize>(
    worker: WorkerId,
    mut counts: watch::Receiver<T>,
    skips: fn(&T) -> [(&'static str, u64); N],
) {
    let label = worker.to_string();
    let keys = skips(&counts.borrow())
        .map(|(reason, _)| CounterKey::new(SKIPPED, &label, "reason", reason));
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = counts.changed() => if changed.is_err() {
                return;
            },
            _ = refresh.tick() => {}
        }
        let now = skips(&counts.borrow_and_update());
        if now.iter().all(|&(_, value)| value == 0) {
            continue;
        }
        for (key, (_, value)) in keys.iter().zip(now) {
            key.counter().absolute(value);
        }
    }
}
