//! One index shared by the event task and the routing tasks.

use std::sync::Arc;

use dynamo_core::{KvEvent, SequenceHash, WorkerId};
use futures::{Stream, StreamExt};
use parking_lot::RwLock;

use super::{IndexError, IndexSnapshot, KvIndex, Overlaps};

/// A [`KvIndex`] behind a reader-writer lock, cheap to clone.
///
/// **Concurrency design.** Queries take the read lock, so any number of routing tasks query at
/// once; events take the write lock, a batch at a time, so a burst of events costs one lock
/// round-trip. A query holds the lock for one walk of the request's blocks (typically well
/// under a microsecond), and a batch holds it for its hash-map updates, so neither side waits
/// long; `parking_lot`'s lock is fair enough that a steady stream of queries cannot starve the
/// writer. We chose this over a lock-free tree or a double-buffered map: it keeps one copy of the
/// data (half the bytes of a double buffer), it is exact at every instant, and on the few cores a
/// router gets, the lock is not the bottleneck (see `docs/router.md` for the figures).
///
/// ```
/// use dynamo_core::BlockSize;
/// use dynamo_router::SharedIndex;
///
/// let index = SharedIndex::new(BlockSize::new(64)?);
/// let reader = index.clone();
/// assert!(reader.overlaps(&[]).is_empty());
/// # Ok::<(), dynamo_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SharedIndex {
    inner: Arc<RwLock<KvIndex>>,
}

impl SharedIndex {
    /// An empty shared index for blocks of `block_size` tokens.
    pub fn new(block_size: dynamo_core::BlockSize) -> Self {
        Self::from_index(KvIndex::new(block_size))
    }

    /// Share an existing index.
    pub fn from_index(index: KvIndex) -> Self {
        SharedIndex {
            inner: Arc::new(RwLock::new(index)),
        }
    }

    /// Apply one event.
    ///
    /// # Errors
    ///
    /// As [`KvIndex::apply`].
    pub fn apply(&self, event: &KvEvent) -> Result<(), IndexError> {
        self.inner.write().apply(event)
    }

    /// Apply a batch of events under one write lock; returns the errors, each with the
    /// position of its event in the batch.
    pub fn apply_batch(&self, events: &[KvEvent]) -> Vec<(usize, IndexError)> {
        let mut index = self.inner.write();
        events
            .iter()
            .enumerate()
            .filter_map(|(i, event)| index.apply(event).err().map(|e| (i, e)))
            .collect()
    }

    /// Apply every event of `events` until the stream ends; spawn the future on your runtime.
    /// This is how a router follows an event plane: pass it a subscription's events
    /// (`dynamo_transport::events::EventPlane::subscribe`, its errors filtered out; a lost
    /// message shows up as a gap in its worker's event ids). An event the index refuses is
    /// counted (`dynamo_router_index_rejected_total`) and skipped.
    ///
    /// ```
    /// use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
    /// use dynamo_router::SharedIndex;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dynamo_core::Error> {
    /// let block_size = BlockSize::new(4)?;
    /// let index = SharedIndex::new(block_size);
    /// let blocks = BlockHasher::new(block_size).hash_blocks(&[1, 2, 3, 4]);
    /// let event = KvEvent {
    ///     worker: WorkerId::new(1),
    ///     event_id: 0,
    ///     tier: StorageTier::Device,
    ///     data: KvEventData::Stored { parent: None, block_size, blocks: blocks.clone() },
    /// };
    /// index.apply_all(futures::stream::iter([event])).await;
    /// assert_eq!(index.overlaps(&[blocks[0].sequence]).get(WorkerId::new(1)).device, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply_all<S>(&self, events: S) -> impl Future<Output = ()> + Send + 'static
    where
        S: Stream<Item = KvEvent> + Send + 'static,
    {
        let index = self.clone();
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let _ = index.apply(&event);
            }
        }
    }

    /// Forget a worker; returns how many blocks it held.
    pub fn remove_worker(&self, worker: WorkerId) -> u64 {
        self.inner.write().remove_worker(worker)
    }

    /// How deep each worker's cached prefix goes for these sequence hashes.
    pub fn overlaps(&self, hashes: &[SequenceHash]) -> Overlaps {
        self.inner.read().overlaps(hashes)
    }

    /// [`overlaps`](Self::overlaps) written into `answer`, replacing what it held, as
    /// [`KvIndex::overlaps_into`]: a caller that keeps one answer reuses its buffer.
    pub fn overlaps_into(&self, hashes: &[SequenceHash], answer: &mut Overlaps) {
        self.inner.read().overlaps_into(hashes, answer);
    }

    /// Dump the index.
    pub fn snapshot(&self) -> IndexSnapshot {
        self.inner.read().snapshot()
    }

    /// Run `f` with shared access to the index, for several reads under one lock.
    pub fn read<T>(&self, f: impl FnOnce(&KvIndex) -> T) -> T {
        f(&self.inner.read())
    }
}
