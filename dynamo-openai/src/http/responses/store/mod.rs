//! Stored responses: what `previous_response_id` continues from and `GET /v1/responses/{id}`
//! returns. Kept in the gateway's own memory ([`MemoryStore`], the default), or in an object
//! store that several frontends share ([`ObjectResponses`]), so that a conversation may go on
//! through any of them.

mod memory;
mod objects;

use std::ops::Range;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use serde_json::json;

use self::memory::MemoryStore;
use self::objects::ObjectResponses;
use super::super::auth::Caller;
use super::background::STALE_AFTER_S;
use crate::ApiError;
use crate::protocol::{InputItem, ResponseObject, ResponseStreamEvent};

/// A stored response and the conversation it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The response as it was returned.
    pub(crate) response: ResponseObject,
    /// The input items of the whole conversation, its output items included (the instructions
    /// are not: they are not carried from one response to the next).
    pub(crate) conversation: Vec<InputItem>,
    /// Where the request's own input is in `conversation` (after the earlier responses' items,
    /// before its output's).
    pub(crate) input: Range<usize>,
    /// When the gateway generating a background response last said it still runs (unix
    /// seconds); `None` once it ends, and on every other response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) running_at: Option<u64>,
}

impl Stored {
    /// As it stands at `now` (unix seconds): a background response still `in_progress` whose
    /// gateway has not said it runs for [`STALE_AFTER_S`] is `failed` (that gateway stopped).
    pub(crate) fn seen_at(mut self, now: u64) -> Self {
        let silent = self
            .running_at
            .is_some_and(|at| now.saturating_sub(at) > STALE_AFTER_S);
        if silent && self.response.status == "in_progress" {
            self.response.status = "failed".to_owned();
            self.response.error = Some(json!({
                "code": "server_error",
                "message": "the gateway generating this background response stopped before it ended",
            }));
            self.running_at = None;
        }
        self
    }
}

/// Where a gateway keeps its stored responses.
#[derive(Debug)]
pub(crate) enum ResponseStore {
    /// In this gateway's memory, within a budget of bytes.
    Memory(MemoryStore),
    /// In an object store, shared with every gateway that uses the same one.
    Objects(ObjectResponses),
}

impl ResponseStore {
    /// In memory, within `budget` bytes; 0 stores nothing.
    pub(crate) fn in_memory(budget: usize) -> Self {
        ResponseStore::Memory(MemoryStore::new(budget))
    }

    /// Under `prefix` in `backend`.
    pub(crate) fn in_objects(backend: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        ResponseStore::Objects(ObjectResponses::new(backend, prefix))
    }

    /// Whether responses are stored at all.
    pub(crate) fn is_on(&self) -> bool {
        match self {
            ResponseStore::Memory(memory) => memory.is_on(),
            ResponseStore::Objects(_) => true,
        }
    }

    /// Whether other gateways may share it (an object store).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, ResponseStore::Objects(_))
    }

    /// Keep `stored` for `caller`; whether it was kept. A response larger than a memory
    /// store's whole budget is not, nor one the object store failed to take (the failure is
    /// logged).
    pub(crate) async fn insert(&self, caller: Caller, stored: Stored) -> bool {
        match self {
            ResponseStore::Memory(memory) => memory.insert(caller, stored),
            ResponseStore::Objects(objects) => objects.insert(caller, &stored).await,
        }
    }

    /// The response `id` as it stands now ([`Stored::seen_at`]), if it is kept and `caller`
    /// stored it; an error if the object store could not be read.
    pub(crate) async fn get(&self, caller: Caller, id: &str) -> Result<Option<Stored>, ApiError> {
        let found = match self {
            ResponseStore::Memory(memory) => memory.get(caller, id),
            ResponseStore::Objects(objects) => objects.get(caller, id).await?,
        };
        Ok(found.map(|stored| stored.seen_at(crate::unix_seconds())))
    }

    /// Say that `caller`'s background response `id` still runs, at `at` (unix seconds), without
    /// touching the response itself (a cancel stored meanwhile stays). A failure is logged:
    /// readers then see the response fail once it is stale.
    pub(crate) async fn beat(&self, caller: Caller, id: &str, at: u64) {
        match self {
            ResponseStore::Memory(memory) => memory.beat(caller, id, at),
            ResponseStore::Objects(objects) => objects.beat(caller, id, at).await,
        }
    }

    /// Keep `events` of `caller`'s streamed background response `id`, the first numbered
    /// `first`, for the other gateways sharing an object store to follow; a memory store keeps
    /// none (its gateway's own event log serves its followers).
    pub(crate) async fn append_events(
        &self,
        caller: Caller,
        id: &str,
        first: u64,
        events: &[ResponseStreamEvent],
    ) {
        if let ResponseStore::Objects(objects) = self {
            objects.append_events(caller, id, first, events).await;
        }
    }

    /// The kept events of `caller`'s streamed background response `id` from the one numbered
    /// `from` on; `None` where none are kept.
    pub(crate) async fn events_since(
        &self,
        caller: Caller,
        id: &str,
        from: u64,
    ) -> Result<Option<Vec<ResponseStreamEvent>>, ApiError> {
        match self {
            ResponseStore::Memory(_) => Ok(None),
            ResponseStore::Objects(objects) => objects.events_since(caller, id, from).await,
        }
    }

    /// Forget the response `id`, if it is kept and `caller` stored it; whether it was.
    pub(crate) async fn delete(&self, caller: Caller, id: &str) -> Result<bool, ApiError> {
        match self {
            ResponseStore::Memory(memory) => Ok(memory.delete(caller, id)),
            ResponseStore::Objects(objects) => objects.delete(caller, id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored response `id` whose size grows with `words`.
    pub(super) fn stored(id: u32, words: usize) -> Stored {
        let response = serde_json::from_value(json!({
            "id": format!("resp_{id}"), "object": "response", "created_at": 0, "status": "completed",
            "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
            "model": "m", "output": [], "parallel_tool_calls": true, "previous_response_id": null,
            "temperature": null, "top_p": null, "tool_choice": "auto", "tools": [],
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "usage": null,
            "metadata": {}, "store": true,
        }))
        .expect("a response");
        let conversation =
            serde_json::from_value(json!([{"role": "user", "content": "word ".repeat(words)}]))
                .expect("items");
        Stored {
            response,
            conversation,
            input: 0..1,
            running_at: None,
        }
    }

    #[test]
    fn a_background_response_its_gateway_left_silent_is_read_as_failed() {
        let mut running = stored(1, 1);
        running.response.status = "in_progress".to_owned();
        running.running_at = Some(1_000);
        let seen = |at| running.clone().seen_at(at);
        assert_eq!(seen(1_000 + STALE_AFTER_S), running);
        let failed = seen(1_001 + STALE_AFTER_S);
        assert_eq!(failed.response.status, "failed");
        assert_eq!(
            failed.response.error.as_ref().map(|error| &error["code"]),
            Some(&json!("server_error"))
        );
        assert_eq!(failed.running_at, None);
        // One that ended is as it ended, however old.
        let mut done = running.clone();
        done.response.status = "cancelled".to_owned();
        assert_eq!(done.clone().seen_at(u64::MAX), done);
    }
}
