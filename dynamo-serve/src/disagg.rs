//! Disaggregated serving: what a worker of each role hands over or pulls, and the two pools of
//! a disaggregated router.
//!
//! | deployment | prefill workers export to | decode workers pull with |
//! |---|---|---|
//! | one process (`--prefill-workers P --decode-workers D`) | `KvExports` registered in a `LocalExports` | that registry (no socket) |
//! | `worker --role prefill` / `--role decode` + `frontend` | `KvExports` served on `--kv-port` | `TcpFetch` from the address in the hand-over |
//!
//! Across processes, `--plane-tls-*` secures the block transfers as it does the request plane.
//! With the `nixl` feature, where NIXL loads at run time and no `--plane-tls-*` is set, the
//! blocks themselves move by NIXL READs of the prefill worker's registered slab
//! (`dynamo_kvbm::NixlSource`, `NixlFetch`), the block server's TCP connection carrying only the
//! control messages.
//!
//! Only candle workers move KV blocks; mocker and echo workers of either role hand nothing
//! over, and their decode workers compute the prompt.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dynamo_candle::{KvExport, LlamaConfig, LlamaWeights};
use dynamo_core::{BlockSize, BoxEngine, EngineExt, KvLayout, WorkerId, WorkerRole};
use dynamo_kvbm::{
    BlockServerConfig, KvExports, KvFetch, KvFetcher, LocalExports, TcpFetch, TcpFetchConfig,
};
use dynamo_router::RouterService;
use dynamo_router::disagg::{
    AlwaysRemote, DisaggRouter, ExpectedTtftPlacement, RouterCostPlacement, StallFreePlacement,
    Threshold,
};

use crate::options::{EngineKind, Options, PlacementKind, RoleKind};

/// How long a prefill worker keeps a hand-over no decode worker has released.
const EXPORT_LEASE: Duration = Duration::from_secs(30);

/// A worker's part in disaggregated serving.
#[derive(Clone, Default)]
pub(crate) struct Part {
    pub(crate) role: WorkerRole,
    /// Where a prefill worker leaves the blocks it hands over.
    pub(crate) export: Option<KvExport>,
    /// How a decode worker pulls them.
    pub(crate) fetch: Option<Arc<dyn KvFetch>>,
}

impl Part {
    /// A prefill worker's part: exports as large as its KV cache, named by `address` (its
    /// block server) or read in this process.
    pub(crate) fn prefill(
        options: &Options,
        layout: &KvLayout,
        address: Option<String>,
    ) -> Result<(Self, Arc<KvExports>), Box<dyn std::error::Error>> {
        let exports = Arc::new(KvExports::new(
            layout.block_bytes(),
            kv_blocks(options),
            EXPORT_LEASE,
        )?);
        let part = Part {
            role: WorkerRole::Prefill,
            export: Some(KvExport {
                exports: exports.clone(),
                address,
            }),
            fetch: None,
        };
        Ok((part, exports))
    }

    /// A decode worker's part, pulling with `fetch`.
    pub(crate) fn decode(fetch: Arc<dyn KvFetch>) -> Self {
        Part {
            role: WorkerRole::Decode,
            export: None,
            fetch: Some(fetch),
        }
    }
}

/// The KV blocks of each worker (`--kv-blocks`, or the candle engine's default).
fn kv_blocks(options: &Options) -> usize {
    options
        .kv_blocks
        .map_or(dynamo_candle::CandleConfig::default().blocks, |n| n) as usize
}

/// The layout of the candle workers' KV blocks for the model in `model_file`; `None` for the
/// other engines, which hand nothing over.
pub(crate) fn layout_of_file(
    options: &Options,
    model_file: &Path,
) -> Result<Option<KvLayout>, Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    Ok(match options.engine {
        EngineKind::Candle => {
            Some(LlamaConfig::read(model_file)?.kv_layout(&options.name, block_size))
        }
        EngineKind::Mocker | EngineKind::Echo => None,
    })
}

/// The layout of candle workers running `weights`.
pub(crate) fn layout_of(
    options: &Options,
    weights: Option<&LlamaWeights>,
) -> Result<Option<KvLayout>, Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(options.block_size)?;
    Ok(weights.map(|weights| weights.config().kv_layout(&options.name, block_size)))
}

/// The part of a `dynamo-serve worker` of `--role`: a prefill worker serves its exports on
/// `--kv-port` (on `--host`), a decode worker pulls over TCP (or NIXL, `nixl_plane`) into a
/// landing store as large as its KV cache.
pub(crate) async fn worker_part(
    options: &Options,
    layout: Option<&KvLayout>,
) -> Result<Part, Box<dyn std::error::Error>> {
    let role = match options.role {
        RoleKind::Aggregated => WorkerRole::Aggregated,
        RoleKind::Prefill => WorkerRole::Prefill,
        RoleKind::Decode => WorkerRole::Decode,
    };
    let Some(layout) = layout else {
        return Ok(Part {
            role,
            ..Part::default()
        });
    };
    Ok(match role {
        WorkerRole::Aggregated => Part::default(),
        WorkerRole::Prefill => {
            let listener =
                tokio::net::TcpListener::bind((options.host, options.kv_port.unwrap_or(0))).await?;
            let address = listener.local_addr()?.to_string();
            let (part, exports) = Part::prefill(options, layout, Some(address.clone()))?;
            let mut server = BlockServerConfig::default();
            server.wrap = crate::tls::kv_transfers(options.plane_tls.as_ref())?;
            let secure = if server.wrap.is_some() {
                " over TLS"
            } else {
                ""
            };
            #[cfg(feature = "nixl")]
            let plane = nixl_plane::serve(options, layout, &address, &mut server);
            #[cfg(not(feature = "nixl"))]
            let plane = "TCP";
            tokio::spawn(dynamo_kvbm::serve_exports_with(listener, exports, server));
            tracing::info!(
                "serving handed-over KV blocks on {address}{secure} (data plane: {plane})"
            );
            part
        }
        WorkerRole::Decode => {
            let mut config = TcpFetchConfig::new(layout.block_bytes(), kv_blocks(options));
            config.wrap = crate::tls::kv_transfers(options.plane_tls.as_ref())?;
            let tcp = TcpFetch::new(config)?;
            let fetcher = KvFetcher::new(LocalExports::new()).with_tcp(tcp.clone());
            #[cfg(feature = "nixl")]
            let (fetch, plane) = nixl_plane::fetch(options, fetcher, tcp);
            #[cfg(not(feature = "nixl"))]
            let (fetch, plane): (Arc<dyn KvFetch>, _) = (Arc::new(fetcher), "TCP");
            tracing::info!("pulling handed-over KV blocks (data plane: {plane})");
            Part::decode(fetch)
        }
    })
}

#[cfg(feature = "nixl")]
mod nixl_plane;

/// The single process's parts: `--prefill-workers` exporting into one registry that the
/// `--decode-workers` read. In worker-id order: prefill workers first.
pub(crate) fn in_process_parts(
    options: &Options,
    layout: Option<&KvLayout>,
) -> Result<Vec<(WorkerId, Part)>, Box<dyn std::error::Error>> {
    let local = LocalExports::new();
    let mut parts = Vec::new();
    for id in 0..options.prefill_workers {
        let id = WorkerId::new(id);
        let part = match layout {
            Some(layout) => {
                let (part, exports) = Part::prefill(options, layout, None)?;
                local.register(id, exports);
                part
            }
            None => Part {
                role: WorkerRole::Prefill,
                ..Part::default()
            },
        };
        parts.push((id, part));
    }
    let fetch: Arc<dyn KvFetch> = Arc::new(KvFetcher::new(local));
    for id in options.prefill_workers..options.prefill_workers + options.decode_workers {
        parts.push((WorkerId::new(id), Part::decode(Arc::clone(&fetch))));
    }
    Ok(parts)
}

/// The engine in front of both pools, with the placement `--placement` names.
pub(crate) fn router(
    options: &Options,
    prefill: RouterService,
    decode: RouterService,
) -> Result<BoxEngine, Box<dyn std::error::Error>> {
    let router = match options.placement {
        PlacementKind::AlwaysRemote => DisaggRouter::new(prefill, decode, AlwaysRemote)?,
        PlacementKind::Threshold => DisaggRouter::new(prefill, decode, Threshold::default())?,
        PlacementKind::ExpectedTtft => {
            DisaggRouter::new(prefill, decode, ExpectedTtftPlacement::default())?
        }
        PlacementKind::Flexible => {
            let flexible = ExpectedTtftPlacement {
                prefill_workers_decode: true,
                ..ExpectedTtftPlacement::default()
            };
            DisaggRouter::new(prefill, decode, flexible)?
        }
        PlacementKind::RouterCost => {
            DisaggRouter::new(prefill, decode, RouterCostPlacement::default())?
        }
        PlacementKind::StallFree => {
            // The hand-over charged as expected-ttft charges it.
            let link = ExpectedTtftPlacement::default();
            let stall_free = StallFreePlacement::default()
                .with_transfer(link.transfer_ms_per_block, link.transfer_latency_ms);
            DisaggRouter::new(prefill, decode, stall_free)?
        }
    };
    Ok(router.boxed_engine())
}
