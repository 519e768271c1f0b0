//! Several choices of one request on the real SmolLM2-135M-Instruct: the prompt is computed
//! once, greedy choices agree with a one-choice greedy answer, sampled choices differ, and every
//! block goes back to the pool.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeMap;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{FinishReason, GenerateRequest, OutputFormat, TokenChunk};
use futures::StreamExt;
use support::chat_prompt;
use tower::ServiceExt;

fn engine() -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, CandleConfig::default(), None).unwrap()
}

/// One choice's tokens and finish reason.
#[derive(Debug, Default, PartialEq)]
struct Choice {
    tokens: Vec<u32>,
    finish: Option<FinishReason>,
    completion_tokens: u32,
}

/// Every chunk of `request`, sorted by choice; checks that only the stream's last chunk is
/// final and that each choice finishes once.
async fn choices(engine: &CandleEngine, request: GenerateRequest) -> BTreeMap<u32, Choice> {
    choices_seen(engine, request, |_| {}).await
}

/// [`choices`], showing `look` each chunk as it comes.
async fn choices_seen(
    engine: &CandleEngine,
    request: GenerateRequest,
    mut look: impl FnMut(&TokenChunk),
) -> BTreeMap<u32, Choice> {
    let stream = engine.clone().oneshot(request).await.unwrap();
    let chunks: Vec<TokenChunk> = stream
        .map(Result::unwrap)
        .inspect(|chunk| look(chunk))
        .collect()
        .await;
    let finals = chunks.iter().filter(|c| c.is_final()).count();
    assert_eq!(finals, 1, "{chunks:?}");
    assert!(chunks.last().unwrap().is_final());
    let mut choices: BTreeMap<u32, Choice> = BTreeMap::new();
    for chunk in chunks {
        let choice = choices.entry(chunk.index).or_default();
        assert!(
            choice.finish.is_none(),
            "a chunk after choice {}'s finish",
            chunk.index
        );
        choice.tokens.extend(&chunk.tokens);
        choice.finish = chunk.finish_reason;
        if let Some(usage) = chunk.usage {
            choice.completion_tokens = usage.completion_tokens;
        }
    }
    choices
}

fn request(id: &str, n: u32, temperature: f32, max_tokens: u32) -> GenerateRequest {
    let prompt = chat_prompt("Write a short poem about the sea.");
    let mut request = GenerateRequest::new(id, "smollm2", prompt)
        .with_max_tokens(max_tokens)
        .with_n(n);
    request.sampling.temperature = Some(temperature);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_choices_share_one_prefill_and_agree_with_one_choice() {
    let engine = engine();
    let prompt_len = request("len", 1, 0.0, 1).tokens.len() as u64;
    let forked = choices(&engine, request("greedy-4", 4, 0.0, 8)).await;
    assert_eq!(
        engine.prefilled_tokens(),
        prompt_len,
        "four choices compute the prompt once"
    );
    assert_eq!(forked.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);

    // A fresh engine, so that the one-choice answer computes its prompt too.
    let single_engine = self::engine();
    let single = choices(&single_engine, request("greedy-1", 1, 0.0, 8)).await;
    assert_eq!(single_engine.prefilled_tokens(), prompt_len);
    let single = &single[&0];
    assert!(!single.tokens.is_empty());
    for (index, choice) in &forked {
        assert_eq!(choice, single, "greedy choice {index} differs from n = 1");
        assert_eq!(choice.completion_tokens as usize, choice.tokens.len());
    }
    for engine in [engine, single_engine] {
        wait_for_free_pool(&engine).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_choices_differ_and_repeat_with_a_seed() {
    let engine = engine();
    let seeded = |id: &str| {
        let mut request = request(id, 4, 1.0, 16);
        request.sampling.seed = Some(11);
        request
    };
    let first = choices(&engine, seeded("sampled-a")).await;
    assert_eq!(first.len(), 4);
    let distinct: std::collections::HashSet<&Vec<u32>> =
        first.values().map(|choice| &choice.tokens).collect();
    assert!(
        distinct.len() > 1,
        "four sampled choices all alike: {first:?}"
    );
    for choice in first.values() {
        assert!(choice.finish.is_some());
    }
    let again = choices(&engine, seeded("sampled-b")).await;
    assert_eq!(
        first, again,
        "a seed gives every choice its own repeatable sampler"
    );
    wait_for_free_pool(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_choice_keeps_its_own_output_format() {
    let engine = engine();
    let mut request = request("json-3", 3, 1.0, 48);
    request.sampling.seed = Some(3);
    // Small enough that every choice completes it well within 48 tokens.
    let schema = serde_json::json!({"type": "object", "additionalProperties": false,
        "required": ["ok"], "properties": {"ok": {"type": "boolean"}}});
    request.format = Some(OutputFormat::JsonSchema {
        schema: schema.to_string(),
    });
    let forked = choices(&engine, request).await;
    assert_eq!(forked.len(), 3);
    let tokenizer = support::preprocessing().tokenizer();
    for (index, choice) in &forked {
        assert_eq!(choice.finish, Some(FinishReason::Stop), "choice {index}");
        let text = tokenizer.decode(&choice.tokens, true).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["ok"].is_boolean(), "choice {index}: {text}");
    }
    wait_for_free_pool(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_choices_and_a_disaggregated_phase_are_refused() {
    let engine = engine();
    let error = engine
        .clone()
        .oneshot(request("many", 64, 0.0, 4))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("n = 64"), "{error}");
    let mut prefill = request("prefill", 2, 0.0, 4);
    prefill.disaggregation = dynamo_core::Disaggregation::Prefill;
    let error = engine.clone().oneshot(prefill).await.unwrap_err();
    assert!(error.to_string().contains("n > 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_cancelled_alone_stops_while_the_others_go_on() {
    let engine = engine();
    let mut request = request("alone", 3, 0.0, 32);
    request.stop.ignore_eos = true;
    // The gateway cancels a choice's token when a stop string ends that choice.
    let cancels = request.choice_tokens();
    let forked = choices_seen(&engine, request, |chunk| {
        if chunk.index == 1 && !chunk.tokens.is_empty() {
            cancels[1].cancel();
        }
    })
    .await;
    let stopped = &forked[&1];
    assert_eq!(stopped.finish, Some(FinishReason::Cancelled));
    assert!(stopped.completion_tokens < 16, "{stopped:?}");
    for index in [0, 2] {
        assert_eq!(forked[&index].finish, Some(FinishReason::Length));
        assert_eq!(forked[&index].completion_tokens, 32);
    }
    wait_for_free_pool(&engine).await;
}

/// Every block back in the pool (pins of shared blocks balanced), within a deadline.
async fn wait_for_free_pool(engine: &CandleEngine) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.counters().in_use != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "blocks still held: {:?}",
            engine.counters()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The gateway over the engine, as the main job serves it: `n` choices of a chat completion
/// from one forked request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_n_choices_from_one_prefill() {
    let engine = engine();
    let app = support::gateway(&engine);
    let ask = |n: u32| {
        serde_json::json!({"model": "smollm2", "n": n, "max_tokens": 8,
            "temperature": 0, "messages": [{"role": "user", "content": "Name a colour."}]})
    };
    let three = support::post_json(&app, "/v1/chat/completions", &ask(3))
        .await
        .1;
    let prefilled = engine.prefilled_tokens();
    let one = support::post_json(&app, "/v1/chat/completions", &ask(1))
        .await
        .1;
    let choices = three["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{three}");
    for choice in choices {
        assert_eq!(choice["message"], one["choices"][0]["message"], "{three}");
    }
    assert_eq!(
        three["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"],
        "the prompt counts once"
    );
    assert_eq!(
        three["usage"]["completion_tokens"].as_u64().unwrap(),
        3 * one["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        prefilled,
        three["usage"]["prompt_tokens"].as_u64().unwrap(),
        "one prefill for three choices"
    );
    wait_for_free_pool(&engine).await;
}
