//! A decode worker's pull of a hand-over, on the candle engines `dynamo-serve` runs
//! (SmolLM2-135M): a pull that fails or times out frees the blocks at the source and the decode
//! worker computes the prompt with the same answer; a pull in progress does not hold the decode
//! worker's other requests; and a client that hangs up during the pull abandons it and frees
//! the source's blocks. The pull is scripted ([`Scripted`]); the real pulls (in process, over
//! TCP, their deadline and landing room) are tested in `dynamo-kvbm` and `dynamo-candle`.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dynamo_candle::{CandleConfig, CandleEngine, KvExport, LlamaWeights};
use dynamo_core::{BlockSize, EngineExt, GenerateRequest, KvHandoff, WorkerId};
use dynamo_kvbm::{Error as KvError, Fetched, KvExports, KvFetch, LocalExports};
use dynamo_router::RouterService;
use dynamo_router::disagg::{AlwaysRemote, DisaggRouter};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use support::eventually;

const BLOCK: u32 = 8;

/// What a [`Scripted`] pull does.
#[derive(Debug, Clone, Copy)]
enum Pull {
    /// Fails at once, as a pull past its deadline does.
    TimesOut,
    /// Never ends (until dropped).
    Hangs,
}

/// A decode worker's pull that behaves as told, and releases at the in-process source as the
/// real fetcher does.
#[derive(Debug)]
struct Scripted {
    pull: Pull,
    source: LocalExports,
    /// Pulls started.
    started: Arc<AtomicUsize>,
    /// Whether a hanging pull was dropped (abandoned).
    abandoned: Arc<AtomicBool>,
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl KvFetch for Scripted {
    fn fetch(&self, _handoff: &KvHandoff) -> BoxFuture<'static, Result<Fetched, KvError>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        match self.pull {
            Pull::TimesOut => futures::future::ready(Err(KvError::TransferTimeout {
                address: "scripted".to_owned(),
                after: Duration::from_secs(5),
            }))
            .boxed(),
            Pull::Hangs => {
                let flag = DropFlag(Arc::clone(&self.abandoned));
                async move {
                    let _flag = flag;
                    futures::future::pending().await
                }
                .boxed()
            }
        }
    }

    fn release(&self, handoff: &KvHandoff) -> BoxFuture<'static, ()> {
        self.source.release(handoff)
    }
}

fn model() -> LlamaWeights {
    let cache = dynamo_assets::cache_dir().expect("a cache directory");
    let path = dynamo_assets::SMOLLM2_135M_INSTRUCT
        .fetch(&cache)
        .expect("the model file");
    LlamaWeights::load(path, &candle_core::Device::Cpu).expect("the model loads")
}

fn config(worker: u64) -> CandleConfig {
    CandleConfig {
        blocks: 128,
        block_size: BlockSize::new(BLOCK).expect("not zero"),
        worker: WorkerId::new(worker),
        ..CandleConfig::default()
    }
}

/// A prompt of `len` tokens (several blocks and a partial one).
fn greedy(id: &str, len: u32) -> GenerateRequest {
    let tokens: Vec<u32> = (0..len).map(|i| 1000 + 37 * i % 5000).collect();
    let mut request = GenerateRequest::new(id, "smollm2", tokens).with_max_tokens(6);
    request.sampling.temperature = Some(0.0);
    request
}

/// A prefill engine (worker 1) exporting into `exports`, registered in `source`; a decode
/// engine (worker 2) pulling with `pull`; the router over both, every prompt remote.
struct Split {
    router: DisaggRouter,
    prefill: CandleEngine,
    decode: CandleEngine,
    exports: Arc<KvExports>,
    started: Arc<AtomicUsize>,
    abandoned: Arc<AtomicBool>,
}

fn split(pull: Pull) -> Split {
    let weights = model();
    let block_size = BlockSize::new(BLOCK).expect("not zero");
    let layout = weights.config().kv_layout("smollm2", block_size);
    let exports = Arc::new(
        KvExports::new(layout.block_bytes(), 128, Duration::from_secs(600)).expect("exports"),
    );
    let source = LocalExports::new();
    source.register(WorkerId::new(1), Arc::clone(&exports));
    let export = KvExport {
        exports: Arc::clone(&exports),
        address: None,
    };
    let prefill = CandleEngine::start(
        weights,
        CandleConfig {
            export: Some(export),
            ..config(1)
        },
        None,
    )
    .expect("a prefill engine");
    let (started, abandoned) = (Arc::default(), Arc::default());
    let fetch = Scripted {
        pull,
        source,
        started: Arc::clone(&started),
        abandoned: Arc::clone(&abandoned),
    };
    let decode = CandleEngine::start(
        model(),
        CandleConfig {
            fetch: Some(Arc::new(fetch)),
            ..config(2)
        },
        None,
    )
    .expect("a decode engine");
    let prefill_router = RouterService::builder(block_size).build();
    prefill_router.insert_worker(WorkerId::new(1), prefill.clone());
    let decode_router = RouterService::builder(block_size).build();
    decode_router.insert_worker(WorkerId::new(2), decode.clone());
    let router = DisaggRouter::new(prefill_router, decode_router, AlwaysRemote).expect("pools");
    Split {
        router,
        prefill,
        decode,
        exports,
        started,
        abandoned,
    }
}

/// How long a test waits for a condition.
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_times_out_frees_the_source_and_the_decode_worker_computes_the_prompt() {
    let mut split = split(Pull::TimesOut);
    // The aggregated answer, from the prefill engine alone.
    let expected = split
        .prefill
        .generate_all(greedy("aggregated", 29))
        .await
        .expect("an answer");
    let got = split
        .router
        .generate_all(greedy("split", 29))
        .await
        .expect("an answer");
    assert_eq!(got.tokens, expected.tokens);
    assert_eq!(split.started.load(Ordering::SeqCst), 1, "one pull, failed");
    let exports = Arc::clone(&split.exports);
    eventually(
        "the source frees the failed hand-over",
        WITHIN,
        async || exports.is_empty(),
    )
    .await;
    let decode = split.decode.clone();
    eventually("the decode engine holds no block", WITHIN, async || {
        decode.counters().in_use == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_during_the_pull_frees_both_sides_and_the_pull_holds_no_other_request()
 {
    let mut split = split(Pull::Hangs);
    let mut stream = split
        .router
        .generate(greedy("split", 29))
        .await
        .expect("a stream");
    let first = stream.next().await.expect("a chunk").expect("no error");
    assert_eq!(first.tokens.len(), 1, "the prefill worker's token");
    let started = Arc::clone(&split.started);
    eventually("the decode engine pulls", WITHIN, async || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!split.exports.is_empty(), "the source holds the hand-over");

    // While that pull is in progress the decode engine serves another request.
    let other = split
        .decode
        .generate_all(greedy("other", 20))
        .await
        .expect("an answer");
    assert_eq!(other.tokens.len(), 6);
    assert!(!split.abandoned.load(Ordering::SeqCst), "still pulling");

    // The client hangs up: the pull is abandoned and the source frees the blocks.
    drop(stream);
    let abandoned = Arc::clone(&split.abandoned);
    eventually("the pull is abandoned", WITHIN, async || {
        abandoned.load(Ordering::SeqCst)
    })
    .await;
    let exports = Arc::clone(&split.exports);
    eventually("the source frees the hand-over", WITHIN, async || {
        exports.is_empty()
    })
    .await;
    let decode = split.decode.clone();
    eventually("the decode engine holds no block", WITHIN, async || {
        decode.counters().in_use == 0
    })
    .await;
    let prefill = split.prefill.clone();
    eventually("the prefill engine holds no block", WITHIN, async || {
        prefill.counters().in_use == 0
    })
    .await;
}
