//! Where the load engine servers report (polled from their metrics) goes: to the routers,
//! through [`RouterService::report_load`].
//!
//! The router books the requests it sends, which is the whole load of an engine only when this
//! frontend is its only client. An engine server that other clients also use reports its own
//! queue; the router raises the server's booked load to that report before its busy
//! thresholds and its policy see it, and does not eject a server whose canary is late while
//! the report says it runs or queues other work (see `dynamo_router::health::ReportedLoad`).
//! A report is trusted until its staleness limit, then ignored: a server whose metrics stop
//! answering is routed on booked load alone.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dynamo_core::{BlockSize, WorkerId};
use dynamo_router::RouterService;
use dynamo_router::health::ReportedLoad;
use dynamo_upstream::EngineLoad;

/// The routers the engine servers' reported loads go to; cheap to clone. Every router the
/// frontend builds for `--engine-at` is told; one that does not route to a server keeps its
/// report unused.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportedLoads {
    routers: Arc<RwLock<Vec<RouterService>>>,
}

impl ReportedLoads {
    /// Send every later report to `router` too.
    pub(crate) fn tell(&self, router: RouterService) {
        self.routers
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(router);
    }

    /// Give every router `worker`'s latest report, or have them forget it (`None`: the
    /// reading went stale).
    pub(crate) fn set(&self, worker: WorkerId, report: Option<ReportedLoad>) {
        let routers = self
            .routers
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        for router in routers.iter() {
            router.report_load(worker, report);
        }
    }
}

/// A server's scraped `load` as the router reads it, trusted for `fresh_for` after the scrape.
/// The KV blocks its running requests hold count where the server tells both its cache's use
/// and size (TensorRT-LLM's iteration statistics, vLLM's and SGLang's metrics), in the router's
/// `block_size`: the share of its tokens in use, over the router's block. (For data-parallel
/// engines the share is the fullest engine's and the size their sum, so the count is an upper
/// bound.)
pub(super) fn reported_load(
    load: &EngineLoad,
    block_size: BlockSize,
    fresh_for: Duration,
) -> ReportedLoad {
    let reported = ReportedLoad::new(
        count(load.running_requests),
        count(load.waiting_requests),
        load.scraped_at.into_std(),
        fresh_for,
    );
    match (load.kv_cache_usage, load.kv_capacity_tokens) {
        (Some(usage), Some(tokens)) if usage.is_finite() => {
            let tokens_in_use = usage.clamp(0.0, 1.0) * tokens as f64;
            let blocks = (tokens_in_use / f64::from(block_size.get())).round() as u64;
            reported.with_kv_blocks_in_use(blocks)
        }
        _ => reported,
    }
}

/// A reported request count as a whole number (gauges are floats; NaN and negatives are 0).
fn count(value: f64) -> u32 {
    if value.is_finite() && value > 0.0 {
        value.round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use dynamo_core::EchoEngine;
    use dynamo_router::BusyThresholds;

    use super::*;

    #[test]
    fn a_report_reaches_every_router_told_and_none_forgets_it() {
        let loads = ReportedLoads::default();
        let routers: Vec<RouterService> = (0..2)
            .map(|_| {
                let router = RouterService::builder(BlockSize::new(16).expect("a block size"))
                    .thresholds(BusyThresholds {
                        max_active_requests: Some(4),
                        ..BusyThresholds::default()
                    })
                    .build();
                router.insert_worker(WorkerId::new(1), EchoEngine::new());
                loads.tell(router.clone());
                router
            })
            .collect();
        let report = ReportedLoad::new(2, 2, Instant::now(), Duration::from_secs(5));
        loads.set(WorkerId::new(1), Some(report));
        assert!(routers.iter().all(|r| !r.selector().has_free_worker()));
        loads.set(WorkerId::new(1), None);
        assert!(routers.iter().all(|r| r.selector().has_free_worker()));
    }

    #[test]
    fn a_servers_cache_use_counts_in_the_routers_blocks_where_it_tells_its_size() {
        let block_size = BlockSize::new(16).expect("a block size");
        let fresh_for = Duration::from_secs(5);
        let load = |kv_cache_usage, kv_capacity_tokens| EngineLoad {
            running_requests: 2.4,
            waiting_requests: f64::NAN,
            kv_cache_usage,
            kv_capacity_tokens,
            scraped_at: tokio::time::Instant::now(),
        };
        let read = |kv_cache_usage, kv_capacity_tokens| {
            reported_load(
                &load(kv_cache_usage, kv_capacity_tokens),
                block_size,
                fresh_for,
            )
        };
        let told = read(Some(0.25), Some(6_400));
        assert_eq!((told.running, told.waiting), (2, 0));
        // A quarter of 6,400 tokens is 100 blocks of 16.
        assert_eq!(told.kv_blocks_in_use, Some(100));
        // The use without the size (vLLM, SGLang), or neither (llama.cpp): no count.
        assert_eq!(read(Some(0.25), None).kv_blocks_in_use, None);
        assert_eq!(read(None, None).kv_blocks_in_use, None);
        assert_eq!(read(Some(f64::NAN), Some(6_400)).kv_blocks_in_use, None);
        // A share read past 1 is the whole cache.
        assert_eq!(read(Some(1.5), Some(6_400)).kv_blocks_in_use, Some(400));
    }
}
