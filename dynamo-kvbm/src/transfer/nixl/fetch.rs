//! [`NixlFetch`]: a decode worker READing a hand-over's blocks from the prefill worker's
//! [`NixlSource`](super::NixlSource) over NIXL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use dynamo_core::{KvHandoff, SequenceHash};
use futures::FutureExt;
use futures::future::BoxFuture;
use nixl_sys::{MemType, XferDescList, XferOp, XferStatus};
use parking_lot::Mutex;

use super::landed::{Landed, Room, Spare};
use crate::nixl::nixl_error;
use crate::transfer::client::Staged;
use crate::transfer::{Fetched, KvFetch, TcpFetch};
use crate::{Error, NixlAgent, NixlRegion};

/// Source agents whose metadata is kept loaded, by block server; past it, one is forgotten.
const LOADED_SOURCES: usize = 256;
/// How long a READ that passed its deadline is waited for before its memory is leaked.
const STRAGGLER_WAIT: Duration = Duration::from_secs(60);

/// Fetches a hand-over over NIXL: asks the prefill worker's block server (at
/// [`KvHandoff::address`]) to stage the blocks in its [`NixlSource`](super::NixlSource), loads
/// the source agent's metadata (once per block server, again when it changes), READs the
/// blocks one-sided in one batched request into registered landing memory (kept for reuse
/// once the [`Fetched`] store is dropped, up to `landing_blocks` blocks of it), and
/// releases them at the source through the block server, as [`TcpFetch`] does.
///
/// The control messages go over the [`TcpFetch`] it is made with (its connections, deadline,
/// wrap and block size); where the block server serves no NIXL, or could stage none of the
/// blocks (its slab full), the fetch is that TCP pull.
/// A fetch that does not finish within the deadline is an [`Error::TransferTimeout`]; NIXL
/// failures are [`Error::Nixl`]; either way the decode worker computes the blocks itself.
///
/// # Bounds, and what happens when full
///
/// At most `landing_blocks` blocks are landed at once, across fetches and not yet dropped
/// [`Fetched`] stores; a fetch takes the leading blocks that fit (maybe none). A READ that
/// passes its deadline (or whose fetch is dropped) keeps its landing memory until NIXL
/// finishes with it, at most a minute more, outside that count; then the memory is leaked
/// rather than freed under NIXL, with a warning.
#[derive(Debug, Clone)]
pub struct NixlFetch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    agent: NixlAgent,
    tcp: TcpFetch,
    landing_blocks: usize,
    used: Arc<AtomicUsize>,
    spare: Arc<Spare>,
    /// Block server address -> (agent name, the metadata loaded for it).
    loaded: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl NixlFetch {
    /// READs with `agent` into at most `landing_blocks` blocks of landing memory, the control
    /// over `tcp`.
    pub fn new(agent: NixlAgent, tcp: TcpFetch, landing_blocks: usize) -> Self {
        let spare = Arc::new(Spare::new(
            landing_blocks.saturating_mul(tcp.config().block_bytes),
        ));
        NixlFetch {
            inner: Arc::new(Inner {
                agent,
                tcp,
                landing_blocks,
                used: Arc::new(AtomicUsize::new(0)),
                spare,
                loaded: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// How many landing blocks fetches in flight or not yet dropped [`Fetched`]s hold.
    pub fn landing_in_use(&self) -> usize {
        self.inner.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl KvFetch for NixlFetch {
    /// READ the leading blocks that fit the landing room.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives back the landing room of a READ not yet posted; a posted READ
    /// keeps its memory until NIXL finishes it. The source keeps the transfer until it is
    /// released or expires.
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>> {
        let inner = self.inner.clone();
        let Some(address) = handoff.address.clone() else {
            let worker = handoff.source;
            return async move { Err(Error::NoRoute { worker }) }.boxed();
        };
        let handoff = handoff.clone();
        async move {
            let after = inner.tcp.config().deadline;
            let deadline = Instant::now() + after;
            match tokio::time::timeout(after, inner.clone().pull(&address, &handoff, deadline))
                .await
            {
                Ok(fetched) => fetched,
                Err(_) => Err(Error::TransferTimeout { address, after }),
            }
        }
        .boxed()
    }

    /// Tell the block server the transfer is done, as [`TcpFetch::release`](KvFetch::release).
    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        self.inner.tcp.release(handoff)
    }
}

impl Inner {
    async fn pull(
        self: Arc<Self>,
        address: &str,
        handoff: &KvHandoff,
        deadline: Instant,
    ) -> Result<Fetched, Error> {
        let block_bytes = self.tcp.config().block_bytes;
        let room = Room::take(&self.used, self.landing_blocks, handoff.blocks.len());
        let asked = &handoff.blocks[..room.blocks()];
        let landed = |region, hashes: &[SequenceHash], room| {
            let blocks = hashes.len();
            let store = Landed {
                region,
                hashes: hashes.to_vec(),
                block_bytes,
                spare: self.spare.clone(),
                _room: room,
            };
            Fetched::new(Arc::new(store), blocks)
        };
        if asked.is_empty() {
            return Ok(landed(None, asked, room));
        }
        let Some(staged) = self.tcp.stage(address, handoff.transfer, asked).await? else {
            drop(room);
            return self.tcp.fetch(handoff).await;
        };
        let found = staged.addresses.len();
        if found == 0 {
            // The source's slab is full (or the transfer has no blocks left): TCP may still
            // have room.
            drop(room);
            return self.tcp.fetch(handoff).await;
        }
        let this = self.clone();
        let address_owned = address.to_owned();
        let region =
            tokio::task::spawn_blocking(move || this.read(&address_owned, &staged, deadline))
                .await
                .map_err(|_| Error::Protocol {
                    address: address.to_owned(),
                    reason: "the NIXL READ's thread panicked".into(),
                })??;
        Ok(landed(Some(region), &asked[..found], room))
    }

    /// Load the source's metadata, READ the staged blocks into new registered memory, and wait
    /// for the READ until `deadline` (and, past it, keep the memory until NIXL is done).
    fn read(&self, address: &str, staged: &Staged, deadline: Instant) -> Result<NixlRegion, Error> {
        let block_bytes = self.tcp.config().block_bytes;
        let name = self.load(address, &staged.metadata)?;
        let agent = self.agent.agent();
        let args = self.agent.args()?;
        let bytes = staged.addresses.len() * block_bytes;
        let region = match self.spare.take(bytes) {
            Some(region) => region,
            None => NixlRegion::new(agent, Some(&args), bytes)
                .map_err(nixl_error("register landing memory"))?,
        };
        let mut local = XferDescList::new(MemType::Dram).map_err(nixl_error("list descriptors"))?;
        let mut remote =
            XferDescList::new(MemType::Dram).map_err(nixl_error("list descriptors"))?;
        for (i, at) in staged.addresses.iter().enumerate() {
            local.add_desc(region.address() + i * block_bytes, block_bytes, 0);
            remote.add_desc(*at as usize, block_bytes, 0);
        }
        let request = agent
            .create_xfer_req(XferOp::Read, &local, &remote, &name, Some(&args))
            .map_err(nixl_error("build the READ"))?;
        let mut pending = agent
            .post_xfer_req(&request, Some(&args))
            .map_err(nixl_error("post the READ"))?;
        while pending {
            if Instant::now() >= deadline {
                wait_out(&self.agent, request, region);
                return Err(Error::TransferTimeout {
                    address: address.to_owned(),
                    after: self.tcp.config().deadline,
                });
            }
            std::thread::yield_now();
            pending = agent
                .get_xfer_status(&request)
                .map_err(nixl_error("complete the READ"))?
                == XferStatus::InProgress;
        }
        Ok(region)
    }

    /// The source agent's name, its `metadata` loaded (again, when it changed).
    fn load(&self, address: &str, metadata: &[u8]) -> Result<String, Error> {
        let agent = self.agent.agent();
        let mut loaded = self.loaded.lock();
        match loaded.get(address) {
            Some((name, known)) if known == metadata => return Ok(name.clone()),
            Some((name, _)) => {
                let _ = agent.invalidate_remote_md(name);
                loaded.remove(address);
            }
            None => {}
        }
        if loaded.len() >= LOADED_SOURCES {
            let forgotten = loaded.keys().next().cloned();
            if let Some((name, _)) = forgotten.and_then(|key| loaded.remove(&key)) {
                let _ = agent.invalidate_remote_md(&name);
            }
        }
        let name = agent
            .load_remote_md(metadata)
            .map_err(nixl_error("load the source agent's metadata"))?;
        loaded.insert(address.to_owned(), (name.clone(), metadata.to_vec()));
        Ok(name)
    }
}

/// Keep a READ's landing memory until NIXL is done with it (at most [`STRAGGLER_WAIT`]), then
/// free it, or leak it where NIXL still has not finished.
fn wait_out(agent: &NixlAgent, request: nixl_sys::XferRequest, region: NixlRegion) {
    let until = Instant::now() + STRAGGLER_WAIT;
    while Instant::now() < until {
        match agent.agent().get_xfer_status(&request) {
            Ok(XferStatus::InProgress) => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                // The request goes before the memory it named.
                drop(request);
                drop(region);
                return;
            }
        }
    }
    tracing::warn!(
        bytes = region.len(),
        "a NIXL READ still running a minute past its deadline: its landing memory is leaked"
    );
    std::mem::forget((request, region));
}
