//! The router's busy thresholds and wait queue: when a worker takes no new request, and what a
//! request does when every worker is busy. The names are NVIDIA Dynamo frontend's where the
//! meaning is the same (`--active-decode-blocks-threshold`, `--active-prefill-tokens-threshold`,
//! `--router-queue-policy`).

use std::str::FromStr;

use clap::{Args, ValueEnum};
use dynamo_router::{BusyThresholds, QueueOrder};

use super::values::at_least_one;

/// The wait queue's size when `--router-queue-size` is not given (the router's own default).
const DEFAULT_QUEUE_SIZE: usize = 1024;

/// The flags of the busy thresholds and the wait queue: the single process and the frontend.
#[derive(Debug, Args)]
#[command(next_help_heading = "Load shedding")]
pub(super) struct BusyArgs {
    /// A worker with this many requests in flight is busy and takes no new one until one ends
    /// (off by default). Counts the requests this router sent, or what an --engine-at server
    /// reports it runs and queues when that is more
    #[arg(long, value_name = "N", value_parser = at_least_one::<u32>)]
    active_requests_threshold: Option<u32>,
    /// A worker with more than this many prompt tokens waiting for prefill is busy (off by
    /// default). An --engine-at server's waiting requests count as this request's prompt each
    #[arg(long, value_name = "TOKENS", value_parser = at_least_one::<u64>)]
    active_prefill_tokens_threshold: Option<u64>,
    /// A worker holding more KV blocks than this for its requests is busy (off by default): a
    /// FRACTION above 0 and at most 1 of each worker's KV blocks, as in NVIDIA Dynamo (the
    /// frontend reads each worker's size from its load reports, and one that reports none is
    /// never busy by it; echo workers have none), or a number of BLOCKS (2 or more). The blocks
    /// counted are the distinct prompt blocks of the requests the router sent, plus one for
    /// each (output beyond that is not counted), raised to what a worker reports where that is
    /// more: its requests counted like this one, or the blocks it says are in use where it
    /// says (NATS load reports, TensorRT-LLM, vLLM and SGLang servers)
    #[arg(long, value_name = "FRACTION|BLOCKS")]
    active_decode_blocks_threshold: Option<DecodeBlocks>,
    /// Requests that wait in the router while every worker is busy; when it is full a new
    /// request is refused at once as overloaded (503 with Retry-After: 1). 0: no waiting, a
    /// request that finds every worker busy is refused. Matters only with a threshold
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE_SIZE)]
    router_queue_size: usize,
    /// The order in which waiting requests are served, within a request's priority
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = QueuePolicy::Fcfs)]
    router_queue_policy: QueuePolicy,
}

/// `--router-queue-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueuePolicy {
    /// First come, first served
    Fcfs,
    /// The request with the fewest prompt tokens left to compute (after its best cached prefix)
    /// first: lower mean time to first token, but a long prompt can wait behind short ones
    ShortestUncachedFirst,
}

/// `--active-decode-blocks-threshold`: a share of each worker's KV cache, or a number of blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum DecodeBlocks {
    /// Above 0, at most 1.
    Fraction(f64),
    /// 2 or more.
    Blocks(u64),
}

impl FromStr for DecodeBlocks {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        const EXPECTED: &str = "must be a fraction above 0 and at most 1 of each worker's KV blocks, or a whole number of blocks";
        match value.parse::<u64>() {
            // "1" is the whole cache, as NVIDIA Dynamo reads it; one block would be no use.
            Ok(1) => return Ok(DecodeBlocks::Fraction(1.0)),
            Ok(0) => return Err(EXPECTED.to_owned()),
            Ok(blocks) => return Ok(DecodeBlocks::Blocks(blocks)),
            Err(_) => {}
        }
        match value.parse::<f64>() {
            Ok(fraction) if fraction > 0.0 && fraction <= 1.0 => {
                Ok(DecodeBlocks::Fraction(fraction))
            }
            _ => Err(EXPECTED.to_owned()),
        }
    }
}

/// The busy thresholds and the wait queue, as given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Busy {
    pub(crate) active_requests: Option<u32>,
    pub(crate) prefill_tokens: Option<u64>,
    pub(crate) decode_blocks: Option<DecodeBlocks>,
    pub(crate) queue_size: usize,
    pub(crate) queue_policy: QueuePolicy,
}

impl Default for Busy {
    /// No threshold (no worker is ever busy), a first-come-first-served queue of 1,024.
    fn default() -> Self {
        Busy {
            active_requests: None,
            prefill_tokens: None,
            decode_blocks: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            queue_policy: QueuePolicy::Fcfs,
        }
    }
}

impl From<BusyArgs> for Busy {
    fn from(args: BusyArgs) -> Self {
        Busy {
            active_requests: args.active_requests_threshold,
            prefill_tokens: args.active_prefill_tokens_threshold,
            decode_blocks: args.active_decode_blocks_threshold,
            queue_size: args.router_queue_size,
            queue_policy: args.router_queue_policy,
        }
    }
}

/// What a command's routers know of their workers' KV caches when they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvCaches {
    /// Every worker's cache holds this many blocks (the single process's candle and mocker
    /// workers, sized by `--kv-blocks`).
    Each(u64),
    /// Each worker's size comes at run time, from its load reports (the frontend's: the NATS
    /// load reports of the workers it finds, and the `--engine-at` servers' `/metrics`).
    Reported,
    /// Not known (the single process's echo workers, which hold no cache).
    Unknown,
}

impl Busy {
    /// The router's thresholds, for workers whose KV caches are `caches`.
    ///
    /// A worker is busy at `--active-requests-threshold` requests, and above the prefill-token
    /// and decode-block thresholds (as NVIDIA Dynamo reads them; the router's limits are "at or
    /// over", hence the one added). A decode-block fraction of caches of one known size is that
    /// number of blocks; of caches reported at run time it is a share of each worker's own
    /// (busy above it too; a worker that reports no size is never busy by it).
    pub(crate) fn thresholds(&self, caches: KvCaches) -> Result<BusyThresholds, String> {
        let (decode_blocks, decode_share) = match (self.decode_blocks, caches) {
            (None, _) => (None, None),
            (Some(DecodeBlocks::Blocks(blocks)), _) => (Some(blocks.saturating_add(1)), None),
            (Some(DecodeBlocks::Fraction(fraction)), KvCaches::Each(capacity)) => {
                // Busy above `fraction` of the cache: at the first whole block past it.
                let allowed = (fraction * capacity as f64).floor() as u64;
                (Some(allowed.saturating_add(1)), None)
            }
            (Some(DecodeBlocks::Fraction(fraction)), KvCaches::Reported) => (None, Some(fraction)),
            (Some(DecodeBlocks::Fraction(_)), KvCaches::Unknown) => {
                return Err(
                    "--active-decode-blocks-threshold as a fraction needs each worker's KV cache size, which echo workers do not have: give a number of blocks (2 or more)"
                        .to_owned(),
                );
            }
        };
        Ok(BusyThresholds {
            max_active_requests: self.active_requests,
            max_prefill_tokens: self.prefill_tokens.map(|tokens| tokens.saturating_add(1)),
            max_decode_blocks: decode_blocks,
            max_decode_share: decode_share,
        })
    }

    /// The wait queue's order and size.
    pub(crate) fn queue(&self) -> (QueueOrder, usize) {
        let order = match self.queue_policy {
            QueuePolicy::Fcfs => QueueOrder::Fcfs,
            QueuePolicy::ShortestUncachedFirst => QueueOrder::ShortestUncachedFirst,
        };
        (order, self.queue_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_blocks_are_a_fraction_up_to_1_or_a_count_from_2() {
        assert_eq!("0.85".parse(), Ok(DecodeBlocks::Fraction(0.85)));
        assert_eq!("1".parse(), Ok(DecodeBlocks::Fraction(1.0)));
        assert_eq!("1.0".parse(), Ok(DecodeBlocks::Fraction(1.0)));
        assert_eq!("400".parse(), Ok(DecodeBlocks::Blocks(400)));
        for refused in ["0", "0.0", "-0.5", "1.5", "NaN", "inf", "lots", ""] {
            assert!(refused.parse::<DecodeBlocks>().is_err(), "{refused}");
        }
    }

    #[test]
    fn thresholds_are_reached_above_the_tokens_and_blocks_and_at_the_requests() {
        let busy = Busy {
            active_requests: Some(4),
            prefill_tokens: Some(10_000),
            decode_blocks: Some(DecodeBlocks::Blocks(400)),
            ..Busy::default()
        };
        let thresholds = busy.thresholds(KvCaches::Unknown).expect("no fraction");
        assert_eq!(
            thresholds,
            BusyThresholds {
                max_active_requests: Some(4),
                max_prefill_tokens: Some(10_001),
                max_decode_blocks: Some(401),
                max_decode_share: None,
            }
        );
        assert_eq!(
            Busy::default().thresholds(KvCaches::Unknown),
            Ok(BusyThresholds::default())
        );
    }

    #[test]
    fn a_fraction_is_blocks_of_a_known_cache_a_share_of_reported_ones_and_needs_one() {
        let busy = |fraction| Busy {
            decode_blocks: Some(DecodeBlocks::Fraction(fraction)),
            ..Busy::default()
        };
        let blocks = |fraction, capacity| {
            busy(fraction)
                .thresholds(KvCaches::Each(capacity))
                .expect("a size")
                .max_decode_blocks
        };
        // 435 of 512 blocks is 84.96%, not over 85%; 436 is.
        assert_eq!(blocks(0.85, 512), Some(436));
        assert_eq!(blocks(0.5, 512), Some(257));
        assert_eq!(blocks(1.0, 512), Some(513));
        let reported = busy(0.85)
            .thresholds(KvCaches::Reported)
            .expect("reported sizes");
        assert_eq!(
            (reported.max_decode_blocks, reported.max_decode_share),
            (None, Some(0.85))
        );
        let error = busy(0.85)
            .thresholds(KvCaches::Unknown)
            .expect_err("no size");
        assert!(error.contains("give a number of blocks"), "{error}");
    }
}
