//! The candle engine with lower KV tiers on the real SmolLM2-135M-Instruct: multi-turn
//! conversations whose earlier turns were evicted from a small device pool come back from the
//! host tier (or from a disk tier below a tiny host tier), and every greedy answer is token for
//! token the answer of an engine that kept everything on the device.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use dynamo_candle::{CandleConfig, CandleEngine, DiskTier, LlamaWeights, OffloadCounters};
use dynamo_core::{BlockSize, EngineExt, GenerateRequest, KvEvent, KvEventData, StorageTier};
use tokio::sync::mpsc;

const SYSTEM: &str = "You are a patient tutor. Answer in one short sentence, then stop.";

/// Three conversations of four turns, asked in turn: each returning turn finds its history
/// evicted from a small device pool by the other two.
const CONVERSATIONS: [[&str; 4]; 3] = [
    [
        "What is the capital of France?",
        "And of Italy?",
        "Which one is larger?",
        "Thank you.",
    ],
    [
        "Why is the sky blue?",
        "Is it blue on Mars?",
        "What colour is the sunset there?",
        "Interesting.",
    ],
    [
        "Name a prime number.",
        "Name a larger one.",
        "Is 91 prime?",
        "Why not?",
    ],
];

/// One answer: its tokens and the prompt tokens it did not compute.
type Turn = (Vec<u32>, usize);

fn engine(config: CandleConfig, events: Option<mpsc::Sender<KvEvent>>) -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, config, events).unwrap()
}

fn config(blocks: u32) -> CandleConfig {
    CandleConfig {
        blocks,
        block_size: BlockSize::new(8).unwrap(),
        ..CandleConfig::default()
    }
}

/// Every conversation's turns, answered one request at a time, conversations interleaved:
/// `turns[conversation][turn]`.
async fn converse(engine: &mut CandleEngine) -> Vec<Vec<Turn>> {
    let mut histories: Vec<Vec<u32>> = vec![Vec::new(); CONVERSATIONS.len()];
    let mut turns = vec![Vec::new(); CONVERSATIONS.len()];
    for turn in 0..4 {
        for (conversation, questions) in CONVERSATIONS.iter().enumerate() {
            let history = &mut histories[conversation];
            if turn == 0 {
                *history = support::system_chat_prompt(SYSTEM, questions[0]);
            } else {
                history.extend(support::next_turn(questions[turn]));
            }
            let mut request = GenerateRequest::new(
                format!("c{conversation}t{turn}"),
                "smollm2",
                history.clone(),
            )
            .with_max_tokens(8);
            request.sampling.temperature = Some(0.0);
            let generation = engine.generate_all(request).await.unwrap();
            let cached = generation.usage.map_or(0, |u| u.cached_tokens as usize);
            history.extend(&generation.tokens);
            turns[conversation].push((generation.tokens, cached));
        }
    }
    turns
}

fn answers(turns: &[Vec<Turn>]) -> Vec<Vec<Vec<u32>>> {
    turns
        .iter()
        .map(|conversation| {
            conversation
                .iter()
                .map(|(tokens, _)| tokens.clone())
                .collect()
        })
        .collect()
}

/// Prompt tokens reused by returning turns (all but the first of each conversation).
fn reused_by_returning_turns(turns: &[Vec<Turn>]) -> Vec<usize> {
    turns
        .iter()
        .flat_map(|conversation| conversation[1..].iter().map(|(_, cached)| *cached))
        .collect()
}

fn onboarded(counters: &OffloadCounters, tier: StorageTier) -> u64 {
    counters
        .tiers
        .iter()
        .filter(|traffic| traffic.tier == tier)
        .map(|traffic| traffic.onboarded_blocks)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_turns_onboarded_from_host_or_disk_answer_as_if_never_evicted() {
    // (a) Everything fits on the device.
    let mut roomy = engine(config(512), None);
    let expected = converse(&mut roomy).await;

    // (b) A device pool that holds about one conversation, and a host tier.
    let (sender, mut events) = mpsc::channel(16_384);
    let mut hosted = engine(
        CandleConfig {
            host_blocks: 256,
            ..config(20)
        },
        Some(sender),
    );
    let with_host = converse(&mut hosted).await;
    assert_eq!(answers(&with_host), answers(&expected), "host tier");
    let counters = hosted.offload_counters().unwrap();
    assert!(
        onboarded(&counters, StorageTier::Host) > 0,
        "returning turns onboarded from the host: {counters:?}"
    );
    // Every returning turn reuses its whole history, from the device or the host, as much as
    // with everything on the device.
    let reused = reused_by_returning_turns(&with_host);
    assert!(reused.iter().all(|&cached| cached > 0), "{reused:?}");
    assert_eq!(reused, reused_by_returning_turns(&expected));
    let mut host_stored = 0;
    while let Ok(event) = events.try_recv() {
        if event.tier == StorageTier::Host
            && let KvEventData::Stored { blocks, .. } = event.data
        {
            host_stored += blocks.len();
        }
    }
    assert!(host_stored > 0, "host-tier events reach the publisher");

    // (c) A host tier of two blocks above a disk tier: most blocks come back from the disk.
    let dir = std::env::temp_dir().join(format!("dynamo-candle-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut on_disk = engine(
        CandleConfig {
            host_blocks: 2,
            disk: Some(DiskTier {
                dir: dir.clone(),
                blocks: 256,
                repeats_only: false,
            }),
            ..config(20)
        },
        None,
    );
    let with_disk = converse(&mut on_disk).await;
    let counters = on_disk.offload_counters().unwrap();
    drop(on_disk);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(answers(&with_disk), answers(&expected), "disk tier");
    assert!(
        onboarded(&counters, StorageTier::Disk) > 0,
        "returning turns onboarded from the disk: {counters:?}"
    );
}
