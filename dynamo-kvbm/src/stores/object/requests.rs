//! The object-store requests of the remote tier, as owned futures the store's runtime runs.

use std::sync::Arc;

use bytes::Bytes;
use dynamo_core::SequenceHash;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Upload one block.
pub(super) async fn put(
    backend: Arc<dyn ObjectStore>,
    key: Path,
    block: Vec<u8>,
) -> object_store::Result<()> {
    backend.put(&key, PutPayload::from(block)).await.map(drop)
}

/// Download one block; `None` when there is no such object.
pub(super) async fn fetch(
    backend: Arc<dyn ObjectStore>,
    key: Path,
) -> object_store::Result<Option<Bytes>> {
    match backend.get(&key).await {
        Ok(found) => found.bytes().await.map(Some),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Delete one block; an object already gone is no error.
pub(super) async fn delete(backend: Arc<dyn ObjectStore>, key: Path) -> object_store::Result<()> {
    match backend.delete(&key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The hashes of the blocks directly under `prefix`: objects named by 16 hex digits and of
/// `block_bytes` bytes. Anything else there is left alone.
pub(super) async fn list(
    backend: Arc<dyn ObjectStore>,
    prefix: Path,
    block_bytes: usize,
) -> object_store::Result<Vec<SequenceHash>> {
    let depth = prefix.parts_count() + 1;
    backend
        .list(Some(&prefix))
        .try_filter_map(|meta| async move {
            let sized = usize::try_from(meta.size).is_ok_and(|size| size == block_bytes);
            let hash = meta
                .location
                .filename()
                .filter(|name| name.len() == 16)
                .and_then(|name| u64::from_str_radix(name, 16).ok());
            Ok(hash
                .filter(|_| sized && meta.location.parts_count() == depth)
                .map(SequenceHash))
        })
        .try_collect()
        .await
}
