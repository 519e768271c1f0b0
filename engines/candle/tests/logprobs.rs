//! Log-probabilities from the candle engine on the real SmolLM2-135M-Instruct: the model's own
//! distribution (log-softmax of the raw logits), the alternatives sorted, greedy picking the
//! most likely token.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{EngineExt, GenerateRequest};
use support::chat_prompt;

fn engine() -> CandleEngine {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    CandleEngine::start(weights, CandleConfig::default(), None).unwrap()
}

fn greedy(id: &str, max_tokens: u32, logprobs: Option<u32>) -> GenerateRequest {
    let prompt = chat_prompt("What is the capital of France?");
    let mut request = GenerateRequest::new(id, "smollm2", prompt).with_max_tokens(max_tokens);
    request.sampling.temperature = Some(0.0);
    request.sampling.logprobs = logprobs;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_tokens_have_the_largest_logprob_of_a_sorted_top() {
    let mut engine = engine();
    let generation = engine
        .generate_all(greedy("logprobs", 6, Some(5)))
        .await
        .unwrap();
    let log_probs = generation.log_probs.unwrap();
    assert_eq!(log_probs.len(), generation.tokens.len());
    for (entry, &token) in log_probs.iter().zip(&generation.tokens) {
        assert_eq!(entry.token, token);
        assert!(entry.logprob <= 0.0, "{entry:?}");
        assert_eq!(entry.top.len(), 5);
        assert!(entry.top.windows(2).all(|w| w[0].1 >= w[1].1), "{entry:?}");
        let best = entry.top[0].1;
        assert_eq!(entry.logprob, best, "greedy picks the most likely token");
        assert_eq!(entry.top[0].0, token);
        assert_eq!(entry.rank, Some(1));
        let mass: f32 = entry.top.iter().map(|t| t.1.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
    }
    // Without the option, no log-probabilities travel.
    let plain = engine.generate_all(greedy("plain", 2, None)).await.unwrap();
    assert!(plain.log_probs.is_none());
}

/// A greedy request for one token of `prompt` (whatever it is), with the top 5 alternatives.
fn one_token_of(id: &str, prompt: &[u32]) -> GenerateRequest {
    let mut request = GenerateRequest::new(id, "smollm2", prompt.to_vec()).with_max_tokens(1);
    request.sampling.temperature = Some(0.0);
    request.sampling.logprobs = Some(5);
    request.stop.ignore_eos = true;
    request
}

/// Two sets of alternatives agree: the same tokens in the same order (where their
/// log-probabilities are apart), each within `1e-3` (one request's rows are computed in
/// another batch than the other's).
fn agree(ours: &[(u32, f32)], theirs: &[(u32, f32)]) -> bool {
    ours.len() == theirs.len()
        && ours
            .iter()
            .zip(theirs)
            .all(|(a, b)| (a.1 - b.1).abs() < 1e-3 && (a.0 == b.0 || (a.1 - b.1).abs() < 1e-3))
}

/// The prompt's log-probabilities against the model's own next-token distributions: entry `k`
/// is the token at `k + 1`, and its alternatives are the ones a request for one token of the
/// prompt's first `k + 1` tokens reports. Computed in chunks (a step of 7 rows), and again
/// once the prompt is in the prefix cache: the same, every entry there (the cache is not used
/// for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_log_probs_are_the_next_token_distributions_of_each_prefix() {
    let weights = LlamaWeights::load(support::model_path(), &candle_core::Device::Cpu).unwrap();
    let config = CandleConfig {
        max_step_tokens: 7,
        ..CandleConfig::default()
    };
    let mut engine = CandleEngine::start(weights, config, None).unwrap();
    let prompt = chat_prompt("What is the capital of France?");
    let mut request = one_token_of("prompt", &prompt);
    request.sampling.prompt_logprobs = Some(5);
    let first = engine.generate_all(request.clone()).await.unwrap();
    let computed = first.prompt_log_probs.clone().unwrap();
    assert_eq!(computed.len(), prompt.len() - 1);
    for (k, entry) in computed.iter().enumerate() {
        assert_eq!(
            entry.token,
            prompt[k + 1],
            "entry {k} is the next prompt token's"
        );
        assert!(entry.logprob <= 0.0);
        assert_eq!(entry.top.len(), 5);
    }
    // Every 5th prefix, and the last, asked for alone.
    for k in (0..prompt.len() - 1).step_by(5).chain([prompt.len() - 2]) {
        let alone = engine
            .generate_all(one_token_of(&format!("prefix-{k}"), &prompt[..=k]))
            .await
            .unwrap();
        let theirs = &alone.log_probs.unwrap()[0].top;
        assert!(
            agree(&computed[k].top, theirs),
            "position {k}: {:?} against {theirs:?}",
            computed[k].top
        );
        if let Some(&(_, logprob)) = theirs.iter().find(|(id, _)| *id == prompt[k + 1]) {
            assert!((computed[k].logprob - logprob).abs() < 1e-3, "position {k}");
        }
    }
    // Now the prompt's blocks are cached: asked again, every entry comes, and the same.
    let again = engine.generate_all(request).await.unwrap();
    let recomputed = again.prompt_log_probs.unwrap();
    assert_eq!(recomputed.len(), computed.len());
    for (k, (a, b)) in recomputed.iter().zip(&computed).enumerate() {
        assert!(
            (a.logprob - b.logprob).abs() < 1e-4 && agree(&a.top, &b.top),
            "position {k}"
        );
    }
    assert_eq!(again.tokens, first.tokens);
    // Without the option, none travel.
    let plain = engine
        .generate_all(one_token_of("plain", &prompt))
        .await
        .unwrap();
    assert!(plain.prompt_log_probs.is_none());
}

/// `echo` with `logprobs` on a text completion, as lm-evaluation-harness scores a continuation:
/// the prompt's tokens come first in `logprobs`, the first with null log-probabilities, each
/// other one as the engine computed it; the generated token follows; the tokens' texts make
/// the choice's text, and each offset is where its token starts in it. Streamed, the echo and
/// its scores come first, as in the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_with_logprobs_scores_the_prompt_on_a_text_completion() {
    let app = support::gateway(&engine());
    let body = serde_json::json!({"model": "smollm2", "prompt": "The capital of France is Paris",
        "max_tokens": 1, "temperature": 0, "echo": true, "logprobs": 2});
    let (status, answer) = support::post_json(&app, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert!(text.starts_with("The capital of France is Paris"), "{text}");
    let logprobs = &choice["logprobs"];
    let tokens: Vec<&str> = logprobs["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token.as_str().unwrap())
        .collect();
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(tokens.len(), prompt_tokens + 1, "{logprobs}");
    assert_eq!(tokens.concat(), text);
    let token_logprobs = logprobs["token_logprobs"].as_array().unwrap();
    assert!(token_logprobs[0].is_null() && logprobs["top_logprobs"][0].is_null());
    for (k, logprob) in token_logprobs.iter().enumerate().skip(1) {
        let logprob = logprob.as_f64().unwrap();
        assert!(logprob <= 0.0, "token {k}: {logprob}");
        let top = logprobs["top_logprobs"][k].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 2, "token {k}: {top:?}");
    }
    let offsets: Vec<u64> = logprobs["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|offset| offset.as_u64().unwrap())
        .collect();
    let mut at = 0;
    for (token, offset) in tokens.iter().zip(&offsets) {
        assert_eq!(*offset, at, "{tokens:?} {offsets:?}");
        at += token.chars().count() as u64;
    }
    // "Paris" after "The capital of France is" is likely: more than one in ten.
    let paris = tokens
        .iter()
        .position(|token| token.trim() == "Paris")
        .unwrap();
    assert!(
        token_logprobs[paris].as_f64().unwrap() > (0.1_f64).ln(),
        "{logprobs}"
    );

    // Streamed: the echo comes first, scored as in the whole answer (the engine sends the
    // prompt's scores before its first token), then the generated token with its own.
    let mut streamed = body.clone();
    streamed["stream"] = serde_json::json!(true);
    let request = axum::http::Request::post("/v1/completions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(streamed.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sse = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let sse = String::from_utf8(sse.to_vec()).unwrap();
    let choices: Vec<serde_json::Value> = sse
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<serde_json::Value>(data).unwrap())
        .filter_map(|chunk| chunk["choices"].get(0).cloned())
        .collect();
    let echoed = &choices[0]["logprobs"];
    assert_eq!(
        choices[0]["text"], "The capital of France is Paris",
        "{sse}"
    );
    assert_eq!(
        echoed["tokens"].as_array().unwrap()[..],
        tokens
            .iter()
            .map(|t| serde_json::json!(t))
            .collect::<Vec<_>>()[..prompt_tokens],
        "{sse}"
    );
    for (k, logprob) in echoed["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        match (logprob.as_f64(), token_logprobs[k].as_f64()) {
            (Some(streamed), Some(whole)) => assert!((streamed - whole).abs() < 1e-4, "token {k}"),
            (streamed, whole) => assert!(streamed.is_none() && whole.is_none(), "token {k}"),
        }
    }
    let text: String = choices
        .iter()
        .filter_map(|choice| choice["text"].as_str())
        .collect();
    assert_eq!(text, choice["text"].as_str().unwrap(), "{sse}");

    // vLLM's shape: by token id, the prompt token's entry with its rank, and the most likely
    // one's (the same entry where the prompt token is the most likely).
    let body = serde_json::json!({"model": "smollm2", "prompt": "The capital of France is Paris",
        "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1});
    let (status, answer) = support::post_json(&app, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let entries = answer["choices"][0]["prompt_logprobs"].as_array().unwrap();
    assert_eq!(entries.len(), prompt_tokens);
    assert!(entries[0].is_null());
    for (k, entry) in entries.iter().enumerate().skip(1) {
        let entry = entry.as_object().unwrap();
        let own = entry
            .values()
            .find(|scored| scored["decoded_token"] == tokens[k])
            .unwrap_or_else(|| panic!("token {k}'s own entry: {entry:?}"));
        let rank = own["rank"].as_u64().unwrap();
        let logprob = own["logprob"].as_f64().unwrap();
        assert!((logprob - token_logprobs[k].as_f64().unwrap()).abs() < 1e-3);
        assert_eq!(
            entry.len(),
            if rank == 1 { 1 } else { 2 },
            "token {k}: {entry:?}"
        );
    }
}
