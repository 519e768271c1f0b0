//! Disaggregated serving on the model thread: a prefill worker copies a prompt's full blocks
//! into its exports and names them in a hand-over; a decode worker copies the blocks it was
//! handed into its own cache instead of computing them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dynamo_core::{Error, GenerateRequest, QueuedEngine, TokenChunk, TokenStream};
use dynamo_core::{HashedBlock, KvHandoff, RequestId, SequenceHash, WorkerId};
use dynamo_kvbm::{Fetched, Held, KvExports, KvFetch, PinnedBlock, PrivateBlock};
use futures::Stream;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::forward::KvStore;

/// Where a prefill worker leaves the blocks it hands over.
#[derive(Debug, Clone)]
pub struct KvExport {
    /// The outbox the blocks are copied into; a block server serves it to other processes.
    pub exports: Arc<KvExports>,
    /// That block server's address (`HOST:PORT`), named in each hand-over; `None` when only
    /// decode workers in this process pull from it.
    pub address: Option<String>,
}

/// Blocks handed over to a request, readable before the model thread admits it.
#[derive(Debug)]
pub(crate) struct Arrived {
    /// Where the blocks are (and the landing room they hold until dropped).
    fetched: Fetched,
    /// Their hashes, in prompt order from the first block.
    blocks: Vec<SequenceHash>,
}

/// The blocks handed over to waiting requests, by request id: put by the engine's handle once
/// they are readable, taken by the model thread when it admits the request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arrivals(Arc<Mutex<HashMap<RequestId, Arrived>>>);

impl Arrivals {
    pub(crate) fn put(&self, request: RequestId, arrived: Arrived) {
        self.lock().insert(request, arrived);
    }

    pub(crate) fn take(&self, request: &RequestId) -> Option<Arrived> {
        self.lock().remove(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, Arrived>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The model thread's side of hand-overs: the exports it offers to, and what arrived.
#[derive(Debug)]
pub(crate) struct Handoffs {
    export: Option<KvExport>,
    pub(crate) arrivals: Arrivals,
    worker: WorkerId,
}

impl Handoffs {
    pub(crate) fn new(export: Option<KvExport>, arrivals: Arrivals, worker: WorkerId) -> Self {
        Handoffs {
            export,
            arrivals,
            worker,
        }
    }

    /// Copy `pinned`'s blocks (whose hashes are `hashes`) into the exports and name them in a
    /// hand-over; `None` without exports, or when they kept no block (the decode worker then
    /// computes the prompt). Each block is copied once, from the cache straight into its
    /// export buffer, and only when the exports do not hold it already.
    pub(crate) fn export(
        &self,
        hashes: &[HashedBlock],
        pinned: &[PinnedBlock],
        store: &KvStore,
    ) -> Option<KvHandoff> {
        let export = self.export.as_ref()?;
        if export.exports.block_bytes() != store.block_bytes() {
            tracing::warn!(
                "the prompt's blocks could not be exported: blocks of {} bytes, exports of {}",
                store.block_bytes(),
                export.exports.block_bytes()
            );
            return None;
        }
        let count = hashes.len().min(pinned.len());
        let sequence: Vec<SequenceHash> = hashes[..count].iter().map(|h| h.sequence).collect();
        let offered = export
            .exports
            .offer_with(&sequence, |i, into| store.read_block(pinned[i].id(), into));
        if offered.blocks.is_empty() {
            return None;
        }
        Some(offered.handoff(self.worker, export.address.clone()))
    }

    /// Copy the leading `blocks` that arrived for `request` (matching its hashes position by
    /// position) into `into`'s blocks in `store`; how many.
    pub(crate) fn onboard(
        &self,
        request: &RequestId,
        first: usize,
        blocks: &[HashedBlock],
        into: &[PrivateBlock],
        store: &mut KvStore,
    ) -> usize {
        let Some(arrived) = self.arrivals.take(request) else {
            return 0;
        };
        let source = &arrived.fetched.store;
        let handed = arrived.blocks.get(first..).unwrap_or_default();
        let matching = blocks
            .iter()
            .zip(handed)
            .take(into.len())
            .take_while(|(ours, theirs)| ours.sequence == **theirs)
            .count();
        let size = store.block_bytes();
        if matching == 0 || source.block_bytes() != size {
            return 0;
        }
        let hashes: Vec<SequenceHash> = blocks[..matching].iter().map(|b| b.sequence).collect();
        // Each block straight from where it arrived into the cache: one copy.
        let written = arrived
            .fetched
            .read_each(&hashes, |i, bytes| store.write_block(into[i].id(), bytes));
        match written {
            Ok(found) => found,
            Err(error) => {
                // The blocks written before the error are in the cache but not counted: the
                // request computes them again.
                tracing::warn!("the handed-over blocks could not be read: {error}");
                0
            }
        }
    }
}

/// Pull the blocks `handoff` names for `request` while the model thread goes on with other
/// work, leave them in `arrivals`, then queue the request. A pull that fails is logged and the
/// request computes its prompt; a request cancelled during the pull ends there. The source is
/// told to free the blocks once the request's first chunk comes (the model thread has copied
/// them by then), or when it ends or is dropped before.
pub(crate) fn pull_then_queue(
    queue: QueuedEngine,
    fetch: Arc<dyn KvFetch>,
    arrivals: Arrivals,
    handoff: KvHandoff,
    request: GenerateRequest,
) -> BoxFuture<'static, Result<TokenStream, Error>> {
    Box::pin(async move {
        let release = Release {
            fetch: Arc::clone(&fetch),
            handoff: handoff.clone(),
            arrivals: arrivals.clone(),
            request: request.id.clone(),
        };
        let cancel = request.cancellation().clone();
        let fetched = tokio::select! {
            fetched = fetch.fetch(&handoff) => fetched,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        match fetched {
            Ok(fetched) => {
                let blocks = handoff.blocks[..fetched.blocks.min(handoff.blocks.len())].to_vec();
                arrivals.put(request.id.clone(), Arrived { fetched, blocks });
            }
            Err(error) => tracing::warn!(
                "request {}: the prompt's blocks could not be pulled from worker {} ({error}); \
                 computing them here",
                request.id,
                handoff.source
            ),
        }
        let stream = queue.oneshot(request).await?;
        Ok(TokenStream::new(
            ReleasedAtFirstChunk {
                inner: stream,
                release: Some(release),
            },
            CancellationToken::new(),
        ))
    })
}

/// Frees a hand-over at its source (and what arrived of it here) when dropped.
struct Release {
    fetch: Arc<dyn KvFetch>,
    handoff: KvHandoff,
    arrivals: Arrivals,
    request: RequestId,
}

impl Drop for Release {
    fn drop(&mut self) {
        drop(self.arrivals.take(&self.request));
        let release = self.fetch.release(&self.handoff);
        // Without a runtime the source frees the blocks when their lease ends.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release);
        }
    }
}

/// A request's stream that releases its hand-over at the first chunk.
struct ReleasedAtFirstChunk {
    inner: TokenStream,
    release: Option<Release>,
}

impl Stream for ReleasedAtFirstChunk {
    type Item = Result<TokenChunk, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx));
        self.release = None;
        std::task::Poll::Ready(item)
    }
}
