//! Moving a prompt's KV blocks from a prefill worker to a decode worker.
//!
//! In disaggregated serving a prefill worker computes a prompt and hands it over
//! ([`KvHandoff`](dynamo_core::KvHandoff)); a decode worker pulls the prompt's blocks and
//! continues. This module is the data plane between them:
//!
//! - the prefill side copies the prompt's blocks into its [`KvExports`] with
//!   [`offer`](KvExports::offer) (or [`offer_with`](KvExports::offer_with), writing each
//!   straight from its KV memory), which names them with a transfer id and keeps them,
//!   bounded, until they are released or their lease ends;
//! - the decode side makes them readable with a [`KvFetch`]: [`LocalExports`] reads another
//!   worker's exports in the same process with no copy of its own; [`TcpFetch`] pulls them from
//!   the prefill worker's block server ([`serve_exports`]) into a bounded landing store;
//!   [`KvFetcher`] picks one of the two for each hand-over;
//! - the decode worker copies the blocks into its KV memory (with
//!   [`read_each`](Fetched::read_each), straight from the exports or landing buffers), drops
//!   the [`Fetched`] and calls [`release`](KvFetch::release), which frees them at the source.
//!
//! A failed or late pull is an error and never a failed request: the decode worker computes the
//! blocks it did not get. Transfers run over TCP, or with the `nixl` feature over NIXL between
//! host memories (`NixlFetch` READs what the block server's `NixlSource` staged); NIXL
//! transfers of GPU memory are planned.
//!
//! # In one process
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use dynamo_core::{SequenceHash, WorkerId};
//! use dynamo_kvbm::{BlockStore, KvExports, KvFetch, KvFetcher, LocalExports};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let block_bytes = 8;
//! let prefill = WorkerId::new(1);
//! let exports = Arc::new(KvExports::new(block_bytes, 64, Duration::from_secs(30))?);
//! let local = LocalExports::new();
//! local.register(prefill, exports.clone());
//!
//! // The prefill worker: offer the prompt's two blocks and hand them over.
//! let prompt = [SequenceHash(10), SequenceHash(11)];
//! let computed: Vec<u8> = (0..16).collect();
//! let handoff = exports.offer(&prompt, &computed)?.handoff(prefill, None);
//!
//! // The decode worker: fetch (no copy), copy into its own KV memory, release.
//! let fetcher = KvFetcher::new(local);
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! let fetched = runtime.block_on(fetcher.fetch(&handoff))?;
//! let mut kv = vec![0u8; fetched.blocks * block_bytes];
//! fetched.store.get_many(&handoff.blocks[..fetched.blocks], &mut kv)?;
//! assert_eq!(kv, computed);
//! drop(fetched);
//! runtime.block_on(fetcher.release(&handoff));
//! assert!(exports.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Across processes
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use dynamo_core::{SequenceHash, WorkerId};
//! use dynamo_kvbm::{
//!     BlockStore, KvExports, KvFetch, LocalExports, KvFetcher, TcpFetch, TcpFetchConfig,
//!     serve_exports,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let block_bytes = 737_280; // SmolLM2-135M, 16 tokens a block, f32
//! // The prefill worker serves its exports.
//! let exports = Arc::new(KvExports::new(block_bytes, 1024, Duration::from_secs(30))?);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:7100").await?;
//! tokio::spawn(serve_exports(listener, exports.clone()));
//! let prompt = [SequenceHash(10)];
//! let handoff = exports
//!     .offer(&prompt, &vec![0; block_bytes])?
//!     .handoff(WorkerId::new(1), Some("10.0.0.7:7100".into()));
//!
//! // The decode worker, in another process, pulls into a landing store of 512 blocks.
//! let fetcher = KvFetcher::new(LocalExports::new())
//!     .with_tcp(TcpFetch::new(TcpFetchConfig::new(block_bytes, 512))?);
//! match fetcher.fetch(&handoff).await {
//!     Ok(fetched) => {
//!         let mut kv = vec![0; fetched.blocks * block_bytes];
//!         fetched.store.get_many(&handoff.blocks[..fetched.blocks], &mut kv)?;
//!     }
//!     Err(error) => tracing::warn!("computing the prompt instead: {error}"),
//! }
//! fetcher.release(&handoff).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Wire format and flow control
//!
//! Binary and block-granular. A request is a 16-byte header (`b"KV"`, version 1, op: 1 fetch or
//! 2 release, block count `u32`, transfer id `u64`) followed by the blocks' sequence hashes
//! (`u64` each); an answer is a 12-byte header (`b"KV"`, version 1, status, blocks found `u32`,
//! the server's block size `u32`) followed by the found blocks' raw bytes, in the order asked.
//! All integers are little-endian. A fetch answers the leading blocks the transfer still has.
//! With the `nixl` feature, op 3 (stage) asks the server's `NixlSource` to copy the leading
//! blocks into its registered slab; its answer carries the agent's metadata and the blocks'
//! addresses instead of their bytes, or status 4 (unsupported) where the server has no NIXL.
//!
//! The client asks for at most [`request_bytes`](TcpFetchConfig::request_bytes) of blocks per
//! request and keeps at most [`window`](TcpFetchConfig::window) requests in flight, reading each
//! block from the socket straight into its landing buffer; the server answers one request at a
//! time per connection, writing the blocks straight from the exports' buffers and holding at
//! most [`max_request_bytes`](BlockServerConfig::max_request_bytes) of them. Neither side ever
//! buffers a whole transfer, and TCP's own flow control paces the rest.
//!
//! Both sides can run the protocol over a [`SocketWrap`] (the `wrap` of [`BlockServerConfig`]
//! and of [`TcpFetchConfig`]): TLS, in a deployment.
//!
//! # When full
//!
//! See [`KvExports`] for the prefill side (expired, then oldest transfers make room; an offer
//! that still does not fit keeps its leading blocks) and
//! [`landing_blocks`](TcpFetchConfig::landing_blocks) for the decode side (a pull takes the
//! leading blocks that fit). `docs/kvbm.md` has the design and the measurements.

mod client;
mod exports;
mod fetch;
mod landing;
#[cfg(feature = "nixl")]
mod nixl;
mod refs;
mod server;
mod shelf;
mod wire;
mod wrap;

#[cfg(test)]
mod tests;

pub use client::{TcpFetch, TcpFetchConfig};
pub use exports::{ExportCounters, KvExports, Offered};
pub use fetch::{Fetched, KvFetch, KvFetcher, LocalExports};
#[cfg(feature = "nixl")]
pub use nixl::{NixlFetch, NixlSource};
pub use server::{BlockServerConfig, serve_exports, serve_exports_with};
pub use wrap::{BlockStream, SocketWrap};
