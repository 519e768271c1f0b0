//! [`KvFetch`]: how a decode worker makes a hand-over's blocks readable, and its
//! implementations in process ([`LocalExports`]) and by route ([`KvFetcher`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use dynamo_core::{KvHandoff, SequenceHash, WorkerId};
use futures::FutureExt;
use futures::future::{self, BoxFuture};
use parking_lot::RwLock;

use super::landing::Reservation;
use super::shelf::ShelfStore;
use super::{KvExports, TcpFetch};
use crate::{BlockStore, Error};

/// Makes the blocks of a [`KvHandoff`] readable for a decode worker, and releases them.
///
/// The decode worker calls [`fetch`](Self::fetch), copies the first [`Fetched::blocks`] of
/// [`KvHandoff::blocks`] from [`Fetched::store`] into its own KV memory, drops the
/// [`Fetched`], and calls [`release`](Self::release), which it also calls when the fetch failed
/// or the request was cancelled. Blocks it could not fetch it computes itself.
///
/// Object safe: hold one as `Arc<dyn KvFetch>`.
pub trait KvFetch: Send + Sync + fmt::Debug {
    /// Make the hand-over's leading blocks readable.
    ///
    /// # Errors
    ///
    /// [`Error::NoRoute`] when the source cannot be reached from here,
    /// [`Error::UnknownTransfer`] when the source no longer holds the transfer, and the
    /// implementation's own (a remote pull's [`Error::Transfer`], [`Error::TransferTimeout`],
    /// [`Error::Protocol`]).
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>>;

    /// Tell the source it may free the hand-over's blocks. Never fails: a source that cannot be
    /// told frees them when the transfer's lease ends.
    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()>;
}

/// What a [`KvFetch::fetch`] made readable: the first [`blocks`](Self::blocks) of the
/// hand-over's [`KvHandoff::blocks`], in [`store`](Self::store), or in place with
/// [`read_each`](Self::read_each).
///
/// Drop it once the blocks are copied: a pull over the network holds landing room until then.
pub struct Fetched {
    /// Where the blocks can be read, by sequence hash.
    pub store: Arc<dyn BlockStore>,
    /// How many of the hand-over's leading blocks are there (at the time of the fetch: blocks
    /// read straight from a source's exports can still expire).
    pub blocks: usize,
    /// The same store as a shelf, when it is one (a source's exports, a landing store): its
    /// blocks are lent in place.
    shelf: Option<Arc<ShelfStore>>,
    /// The landing room the blocks take, given back on drop.
    landing: Option<Reservation>,
}

impl Fetched {
    /// `blocks` leading blocks of a hand-over readable in `store` (for implementations of
    /// [`KvFetch`] outside this crate, and test doubles).
    pub fn new(store: Arc<dyn BlockStore>, blocks: usize) -> Self {
        Fetched {
            store,
            blocks,
            shelf: None,
            landing: None,
        }
    }

    /// `blocks` leading blocks of a hand-over on `shelf`.
    pub(crate) fn on_shelf(shelf: Arc<ShelfStore>, blocks: usize) -> Self {
        Fetched {
            store: shelf.clone(),
            blocks,
            shelf: Some(shelf),
            landing: None,
        }
    }

    /// Blocks pulled onto a landing store's `shelf`, held by `reservation`.
    pub(crate) fn landed(shelf: Arc<ShelfStore>, reservation: Reservation) -> Self {
        Fetched {
            blocks: reservation.hashes().len(),
            landing: Some(reservation),
            ..Fetched::on_shelf(shelf, 0)
        }
    }

    /// Hand the leading `hashes` that are here to `each(i, bytes)`, in order (`i` the
    /// position in `hashes`, `bytes` the block, [`BlockStore::block_bytes`] long); how many.
    /// A decode worker copies each straight into its KV memory: the blocks of a source's
    /// exports in this process ([`LocalExports`]) and of a landing store ([`TcpFetch`]) are
    /// lent in place, with no copy; another [`store`](Self::store) is read block by block
    /// through one buffer.
    ///
    /// `each` runs outside any lock; a block that leaves the exports meanwhile (its lease ran
    /// out) stays readable until `each` returns.
    ///
    /// # Errors
    ///
    /// What the store's [`BlockStore::get`] fails with, for a store that is not a shelf.
    pub fn read_each(
        &self,
        hashes: &[SequenceHash],
        mut each: impl FnMut(usize, &[u8]),
    ) -> Result<usize, Error> {
        if let Some(shelf) = &self.shelf {
            let blocks = shelf.leading(hashes);
            for (i, block) in blocks.iter().enumerate() {
                each(i, block);
            }
            return Ok(blocks.len());
        }
        let mut buffer = vec![0; self.store.block_bytes()];
        for (i, hash) in hashes.iter().enumerate() {
            if !self.store.get(*hash, &mut buffer)? {
                return Ok(i);
            }
            each(i, &buffer);
        }
        Ok(hashes.len())
    }
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("store", &self.store)
            .field("blocks", &self.blocks)
            .field("landed", &self.landing.is_some())
            .finish()
    }
}

/// The exports of the prefill workers in this process, by worker: a decode worker here reads
/// their blocks straight from them, with no copy but its own and no serialization.
///
/// Clones share the registry. It holds what is registered, until unregistered.
#[derive(Debug, Clone, Default)]
pub struct LocalExports {
    workers: Arc<RwLock<HashMap<WorkerId, Arc<KvExports>>>>,
}

impl LocalExports {
    /// An empty registry.
    pub fn new() -> Self {
        LocalExports::default()
    }

    /// Make `worker`'s exports readable here; the exports it replaces, if any.
    pub fn register(&self, worker: WorkerId, exports: Arc<KvExports>) -> Option<Arc<KvExports>> {
        self.workers.write().insert(worker, exports)
    }

    /// Stop reading `worker`'s exports here; them, if they were registered.
    pub fn unregister(&self, worker: WorkerId) -> Option<Arc<KvExports>> {
        self.workers.write().remove(&worker)
    }

    /// `worker`'s exports, if registered.
    pub fn exports(&self, worker: WorkerId) -> Option<Arc<KvExports>> {
        self.workers.read().get(&worker).cloned()
    }
}

impl KvFetch for LocalExports {
    /// Answers at once with the source's exports as the store: nothing is copied, and
    /// [`Fetched::read_each`] lends their blocks in place.
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>> {
        let fetched = match self.exports(handoff.source) {
            None => Err(Error::NoRoute {
                worker: handoff.source,
            }),
            Some(exports) => exports
                .available(handoff.transfer, &handoff.blocks)
                .map(|blocks| Fetched::on_shelf(exports.shelf(), blocks)),
        };
        future::ready(fetched).boxed()
    }

    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        if let Some(exports) = self.exports(handoff.source) {
            exports.release(handoff.transfer);
        }
        future::ready(()).boxed()
    }
}

/// Fetches each hand-over the best way there is: from [`LocalExports`] when its source is
/// registered in this process, else (with the `nixl` feature and a `NixlFetch` set) over NIXL,
/// else over TCP ([`TcpFetch`]) when it has an address, else [`Error::NoRoute`].
#[derive(Debug, Clone)]
pub struct KvFetcher {
    local: LocalExports,
    remote: Option<TcpFetch>,
    #[cfg(feature = "nixl")]
    nixl: Option<super::NixlFetch>,
}

impl KvFetcher {
    /// A fetcher that reads `local` exports only.
    pub fn new(local: LocalExports) -> Self {
        KvFetcher {
            local,
            remote: None,
            #[cfg(feature = "nixl")]
            nixl: None,
        }
    }

    /// Pull hand-overs from other processes over NIXL with `nixl` (preferred to
    /// [`with_tcp`](Self::with_tcp)'s pull where both are set; it falls back to TCP itself
    /// where a block server serves no NIXL). Set it where [`is_nixl_loaded`](crate::is_nixl_loaded).
    #[cfg(feature = "nixl")]
    #[must_use]
    pub fn with_nixl(mut self, nixl: super::NixlFetch) -> Self {
        self.nixl = Some(nixl);
        self
    }

    /// Pull hand-overs from other processes with `remote`.
    #[must_use]
    pub fn with_tcp(mut self, remote: TcpFetch) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Which fetch serves `handoff`.
    fn route(&self, handoff: &KvHandoff) -> Option<&dyn KvFetch> {
        if self.local.exports(handoff.source).is_some() {
            return Some(&self.local);
        }
        #[cfg(feature = "nixl")]
        if let (Some(_), Some(nixl)) = (&handoff.address, &self.nixl) {
            return Some(nixl);
        }
        {
            match (&handoff.address, &self.remote) {
                (Some(_), Some(remote)) => Some(remote),
                _ => None,
            }
        }
    }
}

impl KvFetch for KvFetcher {
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>> {
        match self.route(handoff) {
            Some(fetch) => fetch.fetch(handoff),
            None => future::ready(Err(Error::NoRoute {
                worker: handoff.source,
            }))
            .boxed(),
        }
    }

    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        match self.route(handoff) {
            Some(fetch) => fetch.release(handoff),
            None => future::ready(()).boxed(),
        }
    }
}
