//! Responses kept in an object store (S3, GCS, Azure Blob, a shared directory): every gateway
//! given the same store and prefix sees every response the others stored, so a conversation's
//! turns may land on any frontend behind a load balancer.
//!
//! Each response is one JSON object at `<prefix>/<caller>/<id>.json`, where `<caller>` names
//! the API key that stored it (`open` on a gateway without keys; otherwise 32 hex digits of a
//! SHA-256 of the key's digest, never the key) and `<id>` is the response's id, its characters
//! that object stores refuse percent-encoded. A caller reads only under its own name, so a
//! response stored with one key is not found with another. Nothing is dropped here: how long
//! responses are kept is the bucket's lifecycle rule (OpenAI keeps them 30 days).
//!
//! A background response that runs has a second object beside it, `<id>.running`, the last
//! time (unix seconds) its gateway said so: its beats never rewrite the response, so a cancel
//! stored by another gateway meanwhile stays. It is removed when the response ends. A streamed
//! one's events are kept too, for the other gateways to follow: a folder `<id>.events` of JSON
//! arrays, each named by the `sequence_number` of its first event (20 digits, so that the names
//! sort as the numbers), removed with the response.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::Stored;
use crate::ApiError;
use crate::http::auth::Caller;
use crate::protocol::ResponseStreamEvent;

/// Stored responses under `prefix` in `backend`.
#[derive(Debug)]
pub(crate) struct ObjectResponses {
    backend: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl ObjectResponses {
    pub(crate) fn new(backend: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        ObjectResponses { backend, prefix }
    }

    /// Write `stored` for `caller`, replacing a response of the same id; whether it was
    /// written (a failure is logged).
    pub(crate) async fn insert(&self, caller: Caller, stored: &Stored) -> bool {
        let id = &stored.response.id;
        let written = match serde_json::to_vec(stored) {
            Ok(json) => self
                .backend
                .put(&self.key(caller, id), PutPayload::from(json))
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = &written {
            tracing::error!(%id, %error, "a response could not be written to the response store");
        }
        let ended = stored.response.background == Some(true) && stored.running_at.is_none();
        if ended && written.is_ok() {
            let _ = self.backend.delete(&self.beat_key(caller, id)).await;
        }
        written.is_ok()
    }

    /// Write the time `at` of `caller`'s running background response `id`.
    pub(crate) async fn beat(&self, caller: Caller, id: &str, at: u64) {
        let key = self.beat_key(caller, id);
        if let Err(error) = self
            .backend
            .put(&key, PutPayload::from(at.to_string()))
            .await
        {
            tracing::warn!(%id, %error, "a running background response's beat was not written");
        }
    }

    /// Keep `events` of `caller`'s streamed background response `id`, the first numbered
    /// `first`. A failure is logged: the other gateways' followers then wait for the response
    /// to end, and end their streams as it did.
    pub(crate) async fn append_events(
        &self,
        caller: Caller,
        id: &str,
        first: u64,
        events: &[ResponseStreamEvent],
    ) {
        let key = self
            .events_folder(caller, id)
            .join(format!("{first:020}.json"));
        let written = match serde_json::to_vec(events) {
            Ok(json) => self
                .backend
                .put(&key, PutPayload::from(json))
                .await
                .map(drop)
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = written {
            tracing::warn!(%id, %error, "a streamed background response's events were not written");
        }
    }

    /// The events of `caller`'s streamed background response `id` from the one numbered `from`
    /// on, as far as they are written; `None` if none ever were (a response not streamed in the
    /// background, or not stored).
    pub(crate) async fn events_since(
        &self,
        caller: Caller,
        id: &str,
        from: u64,
    ) -> Result<Option<Vec<ResponseStreamEvent>>, ApiError> {
        let folder = self.events_folder(caller, id);
        let listed = match self
            .backend
            .list(Some(&folder))
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(error) => return Err(unreachable(id, &error)),
        };
        let mut parts: Vec<(u64, Path)> = listed
            .into_iter()
            .filter_map(|meta| {
                let first = meta
                    .location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((first, meta.location))
            })
            .collect();
        if parts.is_empty() {
            return Ok(None);
        }
        parts.sort_unstable_by_key(|(first, _)| *first);
        let mut events = Vec::new();
        for (at, (first, key)) in parts.iter().enumerate() {
            // A part wholly before `from` is not read.
            if parts.get(at + 1).is_some_and(|(next, _)| *next <= from) {
                continue;
            }
            let Some(json) = self.read(key, id).await? else {
                continue;
            };
            let part: Vec<ResponseStreamEvent> =
                serde_json::from_slice(&json).map_err(|error| {
                    ApiError::from(dynamo_core::Error::internal(format!(
                        "the stored events of `{id}` are not events: {error}"
                    )))
                })?;
            let skip = usize::try_from(from.saturating_sub(*first)).unwrap_or(usize::MAX);
            events.extend(part.into_iter().skip(skip));
        }
        Ok(Some(events))
    }

    /// The last beat of `caller`'s background response `id`, if there is one.
    async fn last_beat(&self, caller: Caller, id: &str) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.read(&self.beat_key(caller, id), id).await? else {
            return Ok(None);
        };
        Ok(std::str::from_utf8(&text)
            .ok()
            .and_then(|text| text.parse().ok()))
    }

    /// The bytes at `key` (of the response `id`), if there are any.
    async fn read(&self, key: &Path, id: &str) -> Result<Option<Bytes>, ApiError> {
        let found = match self.backend.get(key).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(unreachable(id, &error)),
        };
        let bytes = found.bytes().await;
        bytes.map(Some).map_err(|error| unreachable(id, &error))
    }

    /// The response `id` that `caller` stored, if there is one.
    pub(crate) async fn get(&self, caller: Caller, id: &str) -> Result<Option<Stored>, ApiError> {
        let Some(json) = self.read(&self.key(caller, id), id).await? else {
            return Ok(None);
        };
        let mut stored: Stored = serde_json::from_slice(&json).map_err(|error| {
            ApiError::from(dynamo_core::Error::internal(format!(
                "the stored response `{id}` is not one: {error}"
            )))
        })?;
        if stored.response.status == "in_progress"
            && let Some(at) = self.last_beat(caller, id).await?
        {
            stored.running_at = stored.running_at.max(Some(at));
        }
        Ok(Some(stored))
    }

    /// Delete the response `id` that `caller` stored; whether there was one.
    pub(crate) async fn delete(&self, caller: Caller, id: &str) -> Result<bool, ApiError> {
        let key = self.key(caller, id);
        // S3 answers a delete of a missing key as a success, so ask first.
        match self.backend.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(unreachable(id, &error)),
        }
        let _ = self.backend.delete(&self.beat_key(caller, id)).await;
        let events = self
            .backend
            .list(Some(&self.events_folder(caller, id)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_or_default();
        for event in events {
            let _ = self.backend.delete(&event.location).await;
        }
        match self.backend.delete(&key).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(unreachable(id, &error)),
        }
    }

    /// Where `caller`'s response `id` is kept.
    fn key(&self, caller: Caller, id: &str) -> Path {
        self.prefix
            .clone()
            .join(scope(caller))
            .join(format!("{id}.json"))
    }

    /// Where the events of `caller`'s streamed background response `id` are kept.
    fn events_folder(&self, caller: Caller, id: &str) -> Path {
        self.prefix
            .clone()
            .join(scope(caller))
            .join(format!("{id}.events"))
    }

    /// Where the beats of `caller`'s background response `id` are kept.
    fn beat_key(&self, caller: Caller, id: &str) -> Path {
        self.prefix
            .clone()
            .join(scope(caller))
            .join(format!("{id}.running"))
    }
}

/// The folder of `caller`'s responses.
fn scope(caller: Caller) -> String {
    let Some(digest) = caller.0 else {
        return "open".to_owned();
    };
    let named = Sha256::new()
        .chain_update(b"dynamo-openai stored responses\0")
        .chain_update(digest)
        .finalize();
    named[..16].iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// The 503 of a store that failed to answer; its detail goes to the log.
fn unreachable(id: &str, error: &object_store::Error) -> ApiError {
    tracing::error!(%id, %error, "the response store failed");
    dynamo_core::Error::unavailable("the response store cannot be reached; try again later").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_part_per_id_whatever_the_id_holds() {
        let store = ObjectResponses::new(
            Arc::new(object_store::memory::InMemory::new()),
            Path::from("responses"),
        );
        let open = store.key(Caller(None), "resp_1");
        assert_eq!(open.as_ref(), "responses/open/resp_1.json");
        let odd = store.key(Caller(None), "resp_../../x");
        assert_eq!(odd.parts().count(), 3, "{odd}");
        let keyed = store.key(Caller(Some([7; 32])), "resp_1");
        let parts: Vec<_> = keyed.parts().collect();
        assert_eq!(parts[1].as_ref().len(), 32);
        assert_ne!(scope(Caller(Some([7; 32]))), scope(Caller(Some([8; 32]))));
    }
}
