//! The block manager's counters as Prometheus metrics, through the `metrics` crate.
//!
//! [`record`] sets every metric from a snapshot of the counters, so the hot paths never touch a
//! metric; an engine calls it after each step. The names are NVIDIA Dynamo's KVBM names where
//! Dynamo has one (its dashboards then work unchanged), and labelled by tier otherwise:
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `kvbm_blocks{tier}` | gauge | blocks held: `device` counts used and cached blocks |
//! | `kvbm_offload_blocks_total{tier}`, `kvbm_offload_bytes_total{tier}` | counter | written into the tier |
//! | `kvbm_onboard_blocks_total{tier}`, `kvbm_onboard_bytes_total{tier}` | counter | read back from the tier to the device |
//! | `kvbm_cache_hit_rate{tier}` | gauge | blocks onboarded from the tier over blocks asked of the lower tiers |
//! | `kvbm_offload_dropped_total` | counter | offloads dropped because the queue to the tiers below was full |
//! | `kvbm_offload_failed_writes_total`, `kvbm_onboard_failed_reads_total` | counter | store errors (the blocks count as absent) |
//! | `kvbm_offload_queue_depth` | gauge | blocks waiting for, or being written by, the offload worker |
//! | `kvbm_offload_blocks_d2h`, `kvbm_offload_blocks_h2d` | counter | Dynamo's names: device to host, host to disk |
//! | `kvbm_onboard_blocks_h2d`, `kvbm_onboard_blocks_d2d` | counter | Dynamo's names: host to device, disk to device |
//! | `kvbm_host_cache_hit_rate`, `kvbm_disk_cache_hit_rate` | gauge | Dynamo's names for the hit rates |

use dynamo_core::StorageTier;
use metrics::{counter, gauge};

use crate::{OffloadCounters, PoolCounters};

/// Set every metric from `device` (the device pool's counters) and `tiers` (the lower tiers',
/// if any).
pub fn record(device: &PoolCounters, tiers: Option<&OffloadCounters>) {
    let held = device.in_use + device.cached;
    gauge!("kvbm_blocks", "tier" => StorageTier::Device.name()).set(held as f64);
    let Some(tiers) = tiers else {
        return;
    };
    for traffic in &tiers.tiers {
        let tier = traffic.tier.name();
        gauge!("kvbm_blocks", "tier" => tier).set(traffic.held as f64);
        counter!("kvbm_offload_blocks_total", "tier" => tier).absolute(traffic.offloaded_blocks);
        counter!("kvbm_offload_bytes_total", "tier" => tier).absolute(traffic.offloaded_bytes);
        counter!("kvbm_onboard_blocks_total", "tier" => tier).absolute(traffic.onboarded_blocks);
        counter!("kvbm_onboard_bytes_total", "tier" => tier).absolute(traffic.onboarded_bytes);
        let hit_rate = hit_rate(traffic.onboarded_blocks, tiers.looked_up);
        gauge!("kvbm_cache_hit_rate", "tier" => tier).set(hit_rate);
        let (offload, onboard, rate) = match traffic.tier {
            StorageTier::Host => (
                "kvbm_offload_blocks_d2h",
                "kvbm_onboard_blocks_h2d",
                "kvbm_host_cache_hit_rate",
            ),
            StorageTier::Disk => (
                "kvbm_offload_blocks_h2d",
                "kvbm_onboard_blocks_d2d",
                "kvbm_disk_cache_hit_rate",
            ),
            StorageTier::Device | StorageTier::Remote => continue,
        };
        counter!(offload).absolute(traffic.offloaded_blocks);
        counter!(onboard).absolute(traffic.onboarded_blocks);
        gauge!(rate).set(hit_rate);
    }
    counter!("kvbm_offload_dropped_total").absolute(tiers.dropped_queue_full);
    counter!("kvbm_offload_failed_writes_total").absolute(tiers.failed_writes);
    counter!("kvbm_onboard_failed_reads_total").absolute(tiers.failed_reads);
    gauge!("kvbm_offload_queue_depth").set(tiers.queue_depth as f64);
}

fn hit_rate(hits: u64, asked: u64) -> f64 {
    if asked == 0 {
        0.0
    } else {
        hits as f64 / asked as f64
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::TierTraffic;

    #[test]
    fn counters_become_metrics_under_dynamos_names() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let device = PoolCounters {
            capacity: 8,
            in_use: 2,
            cached: 3,
            free: 3,
        };
        let host = TierTraffic {
            tier: StorageTier::Host,
            held: 4,
            offloaded_blocks: 6,
            onboarded_blocks: 3,
            ..TierTraffic::default()
        };
        let tiers = OffloadCounters {
            tiers: vec![host],
            looked_up: 12,
            dropped_queue_full: 1,
            ..OffloadCounters::default()
        };
        metrics::with_local_recorder(&recorder, || record(&device, Some(&tiers)));
        let text = handle.render();
        for line in [
            "kvbm_blocks{tier=\"device\"} 5",
            "kvbm_blocks{tier=\"host\"} 4",
            "kvbm_offload_blocks_d2h 6",
            "kvbm_onboard_blocks_h2d 3",
            "kvbm_host_cache_hit_rate 0.25",
            "kvbm_cache_hit_rate{tier=\"host\"} 0.25",
            "kvbm_offload_dropped_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
