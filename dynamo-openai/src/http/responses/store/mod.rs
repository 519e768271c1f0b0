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

use self::memory::MemoryStore;
use self::objects::ObjectResponses;
use super::super::auth::Caller;
use crate::ApiError;
use crate::protocol::{InputItem, ResponseObject};

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

    /// Keep `stored` for `caller`; whether it was kept. A response larger than a memory
    /// store's whole budget is not, nor one the object store failed to take (the failure is
    /// logged).
    pub(crate) async fn insert(&self, caller: Caller, stored: Stored) -> bool {
        match self {
            ResponseStore::Memory(memory) => memory.insert(caller, stored),
            ResponseStore::Objects(objects) => objects.insert(caller, &stored).await,
        }
    }

    /// The response `id`, if it is kept and `caller` stored it; an error if the object store
    /// could not be read.
    pub(crate) async fn get(&self, caller: Caller, id: &str) -> Result<Option<Stored>, ApiError> {
        match self {
            ResponseStore::Memory(memory) => Ok(memory.get(caller, id)),
            ResponseStore::Objects(objects) => objects.get(caller, id).await,
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
