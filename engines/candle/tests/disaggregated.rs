//! Disaggregated serving on the real SmolLM2-135M-Instruct: a prefill engine computes the
//! prompt and hands its blocks over, a decode engine continues, and every greedy answer is
//! token for token the answer of one aggregated engine — with the blocks read from the prefill
//! engine's exports in process, or pulled over TCP from its block server.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use dynamo_candle::{CandleConfig, CandleEngine, KvExport, LlamaWeights};
use dynamo_core::{BlockSize, EngineExt, GenerateRequest, Usage, WorkerId};
use dynamo_kvbm::{KvExports, KvFetch, KvFetcher, LocalExports, TcpFetch, TcpFetchConfig};
use dynamo_router::RouterService;
use dynamo_router::disagg::{AlwaysRemote, DisaggRouter};

const BLOCK: u32 = 8;

/// Prompt lengths: shorter than a block, exactly one, whole blocks, and partial last blocks.
const LENGTHS: [usize; 5] = [5, 8, 29, 48, 59];

fn weights() -> LlamaWeights {
    LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap()
}

fn config(worker: u64) -> CandleConfig {
    CandleConfig {
        blocks: 256,
        block_size: BlockSize::new(BLOCK).unwrap(),
        worker: WorkerId::new(worker),
        ..CandleConfig::default()
    }
}

/// The first `len` tokens of a long chat prompt.
fn prompt(len: usize) -> Vec<u32> {
    let long = support::chat_prompt(
        "Explain, step by step and with an example, how a hash table resolves collisions, \
         why its load factor matters, and what happens when it grows.",
    );
    assert!(long.len() >= len, "the prompt has {} tokens", long.len());
    long[..len].to_vec()
}

fn greedy(id: String, tokens: Vec<u32>) -> GenerateRequest {
    let mut request = GenerateRequest::new(id, "smollm2", tokens).with_max_tokens(10);
    request.sampling.temperature = Some(0.0);
    request
}

/// A prefill engine exporting into `exports` (named by `address`), a decode engine pulling with
/// `fetch`, and a router that always splits.
fn split(
    exports: &Arc<KvExports>,
    address: Option<String>,
    fetch: Arc<dyn KvFetch>,
) -> DisaggRouter {
    let weights_p = weights();
    let prefill = CandleEngine::start(
        weights_p,
        CandleConfig {
            export: Some(KvExport {
                exports: exports.clone(),
                address,
            }),
            ..config(1)
        },
        None,
    )
    .unwrap();
    let decode = CandleEngine::start(
        weights(),
        CandleConfig {
            fetch: Some(fetch),
            ..config(2)
        },
        None,
    )
    .unwrap();
    let block_size = BlockSize::new(BLOCK).unwrap();
    let prefill_router = RouterService::builder(block_size).build();
    prefill_router.insert_worker(WorkerId::new(1), prefill);
    let decode_router = RouterService::builder(block_size).build();
    decode_router.insert_worker(WorkerId::new(2), decode);
    DisaggRouter::new(prefill_router, decode_router, AlwaysRemote).unwrap()
}

fn block_bytes() -> usize {
    weights()
        .config()
        .kv_layout("smollm2", BlockSize::new(BLOCK).unwrap())
        .block_bytes()
}

fn exports() -> Arc<KvExports> {
    Arc::new(KvExports::new(block_bytes(), 512, Duration::from_secs(30)).unwrap())
}

/// Wait until every hand-over has been released at the source.
async fn all_released(exports: &KvExports) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !exports.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the decode engine releases every hand-over");
}

/// The aggregated answers (tokens and usage) for every prompt length.
async fn aggregated() -> Vec<(Vec<u32>, Option<Usage>)> {
    let mut engine = CandleEngine::start(weights(), config(0), None).unwrap();
    let mut answers = Vec::new();
    for len in LENGTHS {
        let generation = engine
            .generate_all(greedy(format!("a{len}"), prompt(len)))
            .await
            .unwrap();
        answers.push((generation.tokens, generation.usage));
    }
    answers
}

async fn disaggregated(router: &mut DisaggRouter, tag: &str) -> Vec<(Vec<u32>, Option<Usage>)> {
    let mut answers = Vec::new();
    for len in LENGTHS {
        let generation = router
            .generate_all(greedy(format!("{tag}{len}"), prompt(len)))
            .await
            .unwrap();
        answers.push((generation.tokens, generation.usage));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_request_answers_as_the_aggregated_one_in_process_and_over_tcp() {
    let expected = aggregated().await;

    // In process: the decode engine reads the prefill engine's exports directly.
    let local_exports = exports();
    let local = LocalExports::new();
    local.register(WorkerId::new(1), local_exports.clone());
    let mut router = split(&local_exports, None, Arc::new(KvFetcher::new(local)));
    let in_process = disaggregated(&mut router, "local").await;
    assert_eq!(in_process, expected, "in process");
    all_released(&local_exports).await;
    // The prompts are prefixes of one another: in process the decode engine reads only the
    // blocks it does not cache yet, so each distinct full block once.
    let distinct_blocks = LENGTHS[LENGTHS.len() - 1] / BLOCK as usize;
    let counters = local_exports.counters();
    assert_eq!(
        counters.pulled_blocks as usize, distinct_blocks,
        "{counters:?}"
    );

    // Over TCP: the decode engine pulls from the prefill engine's block server.
    let tcp_exports = exports();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(dynamo_kvbm::serve_exports(listener, tcp_exports.clone()));
    let block_bytes = block_bytes();
    let tcp = TcpFetch::new(TcpFetchConfig::new(block_bytes, 256)).unwrap();
    let fetch = KvFetcher::new(LocalExports::new()).with_tcp(tcp);
    let mut router = split(&tcp_exports, Some(address), Arc::new(fetch));
    let over_tcp = disaggregated(&mut router, "tcp").await;
    assert_eq!(over_tcp, expected, "over TCP");
    all_released(&tcp_exports).await;
    // A pull over TCP moves every block of the hand-over, cached on the decode engine or not.
    let all_blocks: usize = LENGTHS.iter().map(|len| len / BLOCK as usize).sum();
    assert_eq!(
        tcp_exports.counters().pulled_blocks as usize,
        all_blocks,
        "{:?}",
        tcp_exports.counters()
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_engine_that_cannot_pull_computes_the_prompt() {
    let expected = aggregated().await;
    // The hand-over names no address and the decode engine knows no local exports.
    let exports = exports();
    let mut router = split(
        &exports,
        None,
        Arc::new(KvFetcher::new(LocalExports::new())),
    );
    let answers = disaggregated(&mut router, "nowhere").await;
    assert_eq!(answers, expected);
    assert_eq!(exports.counters().pulled_blocks, 0);
}
