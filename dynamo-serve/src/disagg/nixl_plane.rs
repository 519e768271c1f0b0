//! The `nixl` feature's data plane for split prefill and decode workers: the prefill worker's
//! block server stages hand-overs in a registered slab (`NixlSource`), the decode worker READs
//! them over NIXL (`NixlFetch`), the block server's TCP connection carrying the control.
//!
//! Used only where NIXL loads at run time (`is_nixl_loaded`, asked before any other NIXL call:
//! NIXL aborts the process otherwise) and no `--plane-tls-*` is set (NIXL's READs are not
//! encrypted); elsewhere, and where an agent cannot be made, the blocks move over TCP as
//! without the feature.

use std::sync::Arc;

use dynamo_core::{KvHandoff, KvLayout};
use dynamo_kvbm::{
    BlockServerConfig, Error, Fetched, KvFetch, KvFetcher, NixlAgent, NixlFetch, NixlSource,
    TcpFetch, is_nixl_loaded,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::options::Options;

/// Why NIXL is not used, or `None` where it can be.
fn unusable(options: &Options) -> Option<&'static str> {
    if options.plane_tls.is_some() {
        Some("--plane-tls-* is set and NIXL's READs are not encrypted")
    } else if !is_nixl_loaded() {
        Some("NIXL (libnixl_capi.so) is not loaded")
    } else {
        None
    }
}

/// Give the prefill worker's block server at `address` a `NixlSource` of as many blocks as its
/// exports (`--kv-blocks`) where NIXL is usable; the data plane, for the worker's log.
pub(super) fn serve(
    options: &Options,
    layout: &KvLayout,
    address: &str,
    server: &mut BlockServerConfig,
) -> String {
    if let Some(reason) = unusable(options) {
        return format!("TCP; {reason}");
    }
    let name = format!("dynamo-prefill-{}-{address}", std::process::id());
    let slots = super::kv_blocks(options);
    let source =
        NixlAgent::ucx(&name).and_then(|agent| NixlSource::new(agent, layout.block_bytes(), slots));
    match source {
        Ok(source) => {
            server.nixl = Some(Arc::new(source));
            format!("NIXL, agent {name}, a slab of {slots} blocks")
        }
        Err(error) => format!("TCP; no NIXL source: {error}"),
    }
}

/// The decode worker's fetch: `fetcher` with a `NixlFetch` (its control over `tcp`, landing as
/// many blocks as `tcp` does) where NIXL is usable; the data plane, for the worker's log.
pub(super) fn fetch(
    options: &Options,
    fetcher: KvFetcher,
    tcp: TcpFetch,
) -> (Arc<dyn KvFetch>, String) {
    if let Some(reason) = unusable(options) {
        return (Arc::new(fetcher), format!("TCP; {reason}"));
    }
    let name = format!("dynamo-decode-{}", std::process::id());
    match NixlAgent::ucx(&name) {
        Ok(agent) => {
            let landing = tcp.config().landing_blocks;
            let nixl = NixlFetch::new(agent, tcp.clone(), landing);
            let fetch = Landings {
                fetcher: fetcher.with_nixl(nixl.clone()),
                nixl,
                tcp,
            };
            (Arc::new(fetch), format!("NIXL, agent {name}"))
        }
        Err(error) => (Arc::new(fetcher), format!("TCP; no NIXL agent: {error}")),
    }
}

/// A `KvFetcher` with NIXL that logs (at debug) which way each hand-over landed, told by which
/// landing memory holds its blocks when the fetch returns. Where other fetches hold landing
/// memory at that moment the way cannot be told and nothing is logged.
#[derive(Debug)]
struct Landings {
    fetcher: KvFetcher,
    nixl: NixlFetch,
    tcp: TcpFetch,
}

impl KvFetch for Landings {
    fn fetch(&self, handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, Error>> {
        let fetch = self.fetcher.fetch(handoff);
        let (nixl, tcp) = (self.nixl.clone(), self.tcp.clone());
        let transfer = handoff.transfer;
        async move {
            let fetched = fetch.await?;
            let blocks = fetched.blocks;
            match (nixl.landing_in_use(), tcp.landing_in_use()) {
                _ if blocks == 0 => {}
                (over_nixl, 0) if over_nixl == blocks => {
                    tracing::debug!("KV transfer {transfer}: {blocks} blocks landed over NIXL");
                }
                (0, over_tcp) if over_tcp == blocks => {
                    tracing::debug!("KV transfer {transfer}: {blocks} blocks landed over TCP");
                }
                _ => {}
            }
            Ok(fetched)
        }
        .boxed()
    }

    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        self.fetcher.release(handoff)
    }
}
