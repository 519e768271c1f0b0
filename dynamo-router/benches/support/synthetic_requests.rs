//! The decision bench's requests, shared with the allocation test that measures the same
//! workload.

use dynamo_core::SequenceHash;
use dynamo_router::RouteRequest;

/// `count` requests of exactly `prompt_blocks` blocks of `block_tokens` tokens: a shared
/// prefix of 4 to 28 blocks, one of 64, then blocks of the request's own; generated with a
/// fixed linear congruential sequence.
pub(crate) fn synthetic_requests(
    count: usize,
    prompt_blocks: u64,
    block_tokens: u64,
) -> Vec<RouteRequest> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..count)
        .map(|i| {
            let prefix = next() % 64;
            let shared = 4 + next() % 25;
            let blocks = (0..prompt_blocks)
                .map(|b| {
                    let id = if b < shared {
                        (prefix << 32) | b
                    } else {
                        (1 << 63) | ((i as u64) << 8) | b
                    };
                    SequenceHash(id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                })
                .collect();
            RouteRequest {
                blocks,
                prompt_tokens: prompt_blocks * block_tokens,
                expected_output_tokens: None,
                sequences: 1,
                session_id: None,
                priority: 0,
            }
        })
        .collect()
}
