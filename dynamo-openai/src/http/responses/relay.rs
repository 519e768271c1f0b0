//! A streamed background response followed through the object store that frontends share, by a
//! frontend other than the one generating it (behind a load balancer, a client's
//! `GET /v1/responses/{id}?stream=true` lands on any of them).
//!
//! The generating frontend writes the response's events to the store (the opening ones before it
//! answers, then what came since at each beat, the rest at the end), and a follower elsewhere
//! reads what is written every [`POLL`], to the last event: it is behind the generation by up to
//! a beat and a poll. Should the response end without its last events written (its frontend
//! stopped, or the write failed), the follower waits [`GRACE`] for them, then ends the stream as
//! the stored response ended: `response.completed` or `response.incomplete` with the response,
//! or an `error` event (`response_cancelled`, or the failure's code).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, stream};
use tokio::time::Instant;

use super::super::Shared;
use super::super::auth::Caller;
use super::ResponseStore;
use super::event_log::EventLog;
use crate::protocol::{ResponseObject, ResponseStreamEvent};

/// How often a follower on another frontend reads what was written.
pub(super) const POLL: Duration = Duration::from_secs(1);

/// How long a follower waits for the last events of a response that has ended.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// A streamed background response's events as the frontend generating it keeps them: its event
/// log, and where the store is shared, the number of the first event not yet written there.
#[derive(Debug)]
pub(super) struct Streamed {
    pub(super) log: Arc<EventLog>,
    unwritten: Option<u64>,
}

impl Streamed {
    pub(super) fn new(log: Arc<EventLog>, store: &ResponseStore) -> Self {
        Streamed {
            log,
            unwritten: store.is_shared().then_some(0),
        }
    }

    /// Write to a shared `store` the events of `caller`'s response `id` that it lacks.
    pub(super) async fn write(&mut self, store: &ResponseStore, caller: Caller, id: &str) {
        let Some(first) = self.unwritten else {
            return;
        };
        let (events, _) = self.log.since(usize::try_from(first).unwrap_or(usize::MAX));
        if events.is_empty() {
            return;
        }
        store.append_events(caller, id, first, &events).await;
        self.unwritten = Some(first + events.len() as u64);
    }
}

/// The events of `caller`'s response `id` from the one numbered `from` on, as they are written
/// to the store, to the last; `first` are those written already.
pub(super) fn follow(
    shared: Arc<Shared>,
    caller: Caller,
    id: String,
    from: u64,
    first: Vec<ResponseStreamEvent>,
) -> impl Stream<Item = Vec<ResponseStreamEvent>> + Send + 'static {
    let follower = Follower {
        shared,
        caller,
        id,
        next: from,
        read: Some(first),
        ended_at: None,
        done: false,
    };
    stream::unfold(follower, |mut follower| async move {
        let events = follower.next_events().await?;
        Some((events, follower))
    })
}

/// A follower of the events written to the store.
struct Follower {
    shared: Arc<Shared>,
    caller: Caller,
    id: String,
    /// The number of the next event to send.
    next: u64,
    /// Events read and not yet sent.
    read: Option<Vec<ResponseStreamEvent>>,
    /// When the response was first seen ended without its last events.
    ended_at: Option<Instant>,
    done: bool,
}

impl Follower {
    /// The next events; `None` after the last.
    async fn next_events(&mut self) -> Option<Vec<ResponseStreamEvent>> {
        if self.done {
            return None;
        }
        loop {
            let events = match self.read.take() {
                Some(events) => events,
                None => {
                    tokio::time::sleep(POLL).await;
                    self.written_since().await
                }
            };
            if !events.is_empty() {
                self.next += events.len() as u64;
                self.done = events.last().is_some_and(ResponseStreamEvent::is_last);
                return Some(events);
            }
            if let Some(last) = self.ending_without_events().await {
                self.done = true;
                return Some(vec![last]);
            }
        }
    }

    /// The events written from `next` on; none while the store cannot be read (its error is
    /// logged; the next poll tries again).
    async fn written_since(&self) -> Vec<ResponseStreamEvent> {
        let events = self
            .shared
            .responses
            .events_since(self.caller, &self.id, self.next);
        events.await.ok().flatten().unwrap_or_default()
    }

    /// With nothing new: the event that ends the stream as the response ended, once it has been
    /// ended (or deleted) for [`GRACE`] without its last events.
    async fn ending_without_events(&mut self) -> Option<ResponseStreamEvent> {
        let stored = self
            .shared
            .responses
            .get(self.caller, &self.id)
            .await
            .ok()?;
        let response = match stored {
            Some(stored) if stored.response.status == "in_progress" => return None,
            stored => stored.map(|stored| stored.response),
        };
        let now = Instant::now();
        if now.duration_since(*self.ended_at.get_or_insert(now)) < GRACE {
            return None;
        }
        Some(ending(&self.id, response, self.next))
    }
}

/// The event numbered `sequence_number` that ends the stream of the response `id` as it ended
/// (`None`: deleted).
fn ending(id: &str, response: Option<ResponseObject>, sequence_number: u64) -> ResponseStreamEvent {
    let Some(response) = response else {
        return ResponseStreamEvent::Error {
            sequence_number,
            code: Some("response_not_found".to_owned()),
            message: format!("the response `{id}` was deleted"),
            param: None,
        };
    };
    match response.status.as_str() {
        "completed" => ResponseStreamEvent::Completed {
            sequence_number,
            response: Box::new(response),
        },
        "incomplete" => ResponseStreamEvent::Incomplete {
            sequence_number,
            response: Box::new(response),
        },
        "cancelled" => super::background::cancelled(id, sequence_number),
        _ => {
            let error = response.error.unwrap_or_default();
            let text = |field: &str, otherwise: &str| {
                error[field].as_str().unwrap_or(otherwise).to_owned()
            };
            ResponseStreamEvent::Error {
                sequence_number,
                code: Some(text("code", "server_error")),
                message: text("message", "the response failed"),
                param: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_response_that_ended_without_its_last_events_ends_its_stream_as_it_ended() {
        let response = |status: &str, error: Option<serde_json::Value>| {
            let mut response: ResponseObject = serde_json::from_value(json!({
                "id": "resp_1", "object": "response", "created_at": 0, "status": status,
                "error": null, "incomplete_details": null, "instructions": null,
                "max_output_tokens": null, "model": "m", "output": [], "parallel_tool_calls": true,
                "previous_response_id": null, "temperature": null, "top_p": null,
                "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
                "truncation": "disabled", "usage": null, "metadata": {}, "store": true,
            }))
            .expect("a response");
            response.error = error;
            Some(response)
        };
        let ended = ending("resp_1", response("completed", None), 7);
        assert!(matches!(
            ended,
            ResponseStreamEvent::Completed {
                sequence_number: 7,
                ..
            }
        ));
        let ended = ending("resp_1", response("incomplete", None), 7);
        assert_eq!(ended.kind(), "response.incomplete");
        let code = |event: ResponseStreamEvent| match event {
            ResponseStreamEvent::Error { code, .. } => code,
            other => panic!("not an error: {}", other.kind()),
        };
        let cancelled = ending("resp_1", response("cancelled", None), 7);
        assert_eq!(code(cancelled).as_deref(), Some("response_cancelled"));
        let stale = json!({"code": "server_error", "message": "the gateway stopped"});
        let failed = ending("resp_1", response("failed", Some(stale)), 7);
        assert_eq!(code(failed).as_deref(), Some("server_error"));
        let deleted = ending("resp_1", None, 7);
        assert_eq!(code(deleted).as_deref(), Some("response_not_found"));
    }
}
